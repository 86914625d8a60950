#ifndef CRM_CCURL_SHIM_H
#define CRM_CCURL_SHIM_H
#include <curl/curl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

/* curl_easy_setopt / curl_easy_getinfo are variadic and do not import into Swift:
   these typed wrappers are what Swift calls. */
static inline CURLcode crm_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode crm_curl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode crm_curl_setopt_ptr(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode crm_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode crm_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
typedef size_t (*crm_curl_write_cb)(char *, size_t, size_t, void *);
static inline CURLcode crm_curl_setopt_writefn(CURL *h, CURLoption o, crm_curl_write_cb v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode crm_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode crm_curl_getinfo_double(CURL *h, CURLINFO i, double *v) { return curl_easy_getinfo(h, i, v); }

/* curl_multi_setopt is variadic too: the event-loop options the transfer loop sets. */
static inline CURLMcode crm_multi_setopt_socketfn(CURLM *m, curl_socket_callback f) { return curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, f); }
static inline CURLMcode crm_multi_setopt_timerfn(CURLM *m, curl_multi_timer_callback f) { return curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, f); }
static inline CURLMcode crm_multi_setopt_ptr(CURLM *m, CURLMoption o, void *p) { return curl_multi_setopt(m, o, p); }
static const int crm_curl_socket_timeout = CURL_SOCKET_TIMEOUT;

/* True for loopback, private, link-local, CGNAT, unspecified, multicast and reserved addresses:
   the ones a CRM URL must not reach unless CRM_ALLOW_PRIVATE_URLS is set. */
static inline int crm_is_private_v4(const unsigned char *a) {
    if (a[0] == 0 || a[0] == 10 || a[0] == 127) return 1;
    if (a[0] == 100 && (a[1] & 0xC0) == 64) return 1;
    if (a[0] == 169 && a[1] == 254) return 1;
    if (a[0] == 172 && (a[1] & 0xF0) == 16) return 1;
    if (a[0] == 192 && a[1] == 168) return 1;
    if (a[0] == 192 && a[1] == 0 && a[2] == 0) return 1;
    if (a[0] >= 224) return 1;
    return 0;
}
static inline int crm_is_private_sockaddr(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        return crm_is_private_v4((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const unsigned char zero[16] = {0};
        if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1)) return 1;      /* :: and ::1 */
        if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) return 1;                         /* fe80::/10 */
        if ((a[0] & 0xFE) == 0xFC) return 1;                                         /* fc00::/7 */
        if (a[0] == 0xFF) return 1;                                                  /* multicast */
        if (memcmp(a, zero, 10) == 0 && a[10] == 0xFF && a[11] == 0xFF) return crm_is_private_v4(a + 12); /* v4-mapped */
        if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xFF && a[3] == 0x9B) return crm_is_private_v4(a + 12); /* NAT64 */
        return 0;
    }
    return 1;
}

/* Resolves host and reports: 0 = every address public, 1 = some address private, -1 = does not resolve. */
static inline int crm_host_is_private(const char *host) {
    struct addrinfo hints, *res = NULL, *p;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) return -1;
    int private_found = 0;
    for (p = res; p; p = p->ai_next) if (crm_is_private_sockaddr(p->ai_addr)) private_found = 1;
    freeaddrinfo(res);
    return private_found;
}

/* The connect-time guard: refuses to open a socket to a private address, so a DNS answer
   that changes after the up-front check (rebinding) still cannot reach an internal host. */
static curl_socket_t crm_guarded_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    (void)clientp; (void)purpose;
    if (crm_is_private_sockaddr(&address->addr)) return CURL_SOCKET_BAD;
    return socket(address->family, address->socktype, address->protocol);
}
static inline CURLcode crm_curl_block_private(CURL *h) {
    return curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, crm_guarded_opensocket);
}
#endif
