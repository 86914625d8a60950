#ifndef CRM_COPENSSL_SHIM_H
#define CRM_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/bio.h>

/* RS256 (RSASSA-PKCS1-v1_5 with SHA-256) over data with a PEM private key.
   Returns 0 on success, -1 unreadable key, -2 not an RSA key, -3 signing failed.
   sig must hold at least 1024 bytes; *siglen is set to the signature length. */
static inline int crm_rs256_sign(const char *pem, const unsigned char *data, size_t len,
                                 unsigned char *sig, size_t *siglen) {
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio) return -1;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!key) return -1;
    if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA) { EVP_PKEY_free(key); return -2; }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    *siglen = 1024;
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1
                 && EVP_DigestSign(ctx, sig, siglen, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return ok ? 0 : -3;
}
#endif
