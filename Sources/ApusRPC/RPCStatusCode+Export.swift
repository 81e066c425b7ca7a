// The status-code type is defined in ApusProto (the lowest layer, shared with the scheduler
// and worker); only that type is re-exported, so this layer still knows nothing of REAPI.
@_exported import struct ApusProto.RPCStatusCode
