/*
 * error.c — the per-thread last-error message behind mb_fail and mb_last_error.
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char mb_error_buf[1024];

int mb_fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(mb_error_buf, sizeof mb_error_buf, fmt, ap);
  va_end(ap);
  return status;
}

__attribute__((visibility("default"))) const char *mb_last_error(void) { return mb_error_buf; }
