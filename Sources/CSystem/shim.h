// glibc calls that Swift's Glibc module does not export. Part of libc: nothing to link.
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

// The calling thread's kernel id (for per-thread scheduling priority).
static inline int crm_gettid(void) { return (int)syscall(SYS_gettid); }
