#ifndef APUS_COPENSSL_SHIM_H
#define APUS_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/sha.h>
#endif
