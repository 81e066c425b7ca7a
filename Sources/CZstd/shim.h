#ifndef APUS_CZSTD_SHIM_H
#define APUS_CZSTD_SHIM_H
// The streaming API (ZSTD_compressStream2, ZSTD_decompressStream) is stable since 1.4.0;
// nothing from the experimental section is used, so ZSTD_STATIC_LINKING_ONLY stays off.
#include <zstd.h>
#endif
