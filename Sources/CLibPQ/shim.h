#ifndef SWITCHYARD_CLIBPQ_SHIM_H
#define SWITCHYARD_CLIBPQ_SHIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <libpq-fe.h>

/// A pipe whose ends close on exec, created atomically (pipe2 is a GNU extension that Swift's
/// Glibc module does not export), so a child process never inherits a stray copy.
static inline int switchyard_cloexec_pipe(int descriptors[2]) {
    return pipe2(descriptors, O_CLOEXEC);
}

#endif
