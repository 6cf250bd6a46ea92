/** Model shapes the tests share. */
import { completeDims, type ModelDims } from "../../src/config/dims.ts";

/** The paper's 972M MambaByte: d_model 1792, 48 layers (d_inner 3584, dt_rank 112). */
export const DIMS_972M: ModelDims = completeDims({
  vocabSize: 256,
  dModel: 1792,
  nLayer: 48,
  dState: 16,
  dConv: 4,
  expand: 2,
});
