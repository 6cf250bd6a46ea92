/**
 * Output writers: result records (strings, numbers, Maps of per-layer tensors, HostTensors) saved
 * as msgpack, pickle or safetensors, chosen by file extension.
 *
 * @module
 */

export * from "./tensor.ts";
export { OutputError } from "./errors.ts";
export { PyTuple, TorchMinMax, torchMinMax, TorchTensor, torchTensor, tuple } from "./value.ts";
export { OUTPUT_EXTENSIONS, writeOutputs } from "./write.ts";
export { dumpPickle, encodePickle, writePickle } from "./pickle.ts";
export { dumpMsgpack, encodeMsgpack, writeMsgpack } from "./msgpack.ts";
export { flattenRecord, writeSafetensorsRecord } from "./safetensors.ts";
export { atomicReplace, atomicWrite } from "./atomic.ts";
