"""sass_text.py — `cuobjdump -sass` text split into kernels, for the SASS readers beside it
(sass_wait_order.py, sass_after_wait.py)."""
import re

FUNCTION = re.compile(r"Function : (\S+)")


def functions(src):
    """(mangled name, its lines) for each "Function :" header of the text, in order."""
    fn, lines = None, []
    for line in src:
        m = FUNCTION.search(line)
        if m:
            if fn is not None:
                yield fn, lines
            fn, lines = m.group(1), []
        elif fn is not None:
            lines.append(line)
    if fn is not None:
        yield fn, lines
