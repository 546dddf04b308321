/*
 * registry_internal.h: what registry/files.c (reading, verifying,
 * publishing) shares with registry/registry.c (scanning, serving, swapping,
 * policy). Not part of the public contract: only the registry's .c files
 * include it.
 *
 * Names follow libuv's habit for internal non-static symbols: the module
 * prefix and a double underscore.
 */
#ifndef PREDICTD_REGISTRY_INTERNAL_H
#define PREDICTD_REGISTRY_INTERNAL_H

#include <dirent.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "registry/registry.h"

/* Largest MANIFEST and policy.json read. */
#define REGISTRY__MAX_SMALL_FILE (64u << 10)
/* Highest version number accepted (2^31). */
#define REGISTRY__MAX_VERSION 2147483648u
/* Removed-from-disk versions kept in a series' listing, oldest dropped. */
#define REGISTRY__KEEP_REMOVED 16

/*
 * A loaded, verified version. Immutable after registry__load_at() returns,
 * except refs and label (atomics). The registry holds one reference while
 * the version is loaded in its slot; every registry_acquire() adds one.
 * Freed (registry__version_unref) when the count reaches zero.
 */
struct registry_version {
    atomic_uint refs;
    /* Static string "stable"/"canary" or NULL; written by the scanner under
     * the lookup lock, read lock-free by requests. */
    _Atomic(const char *) label;
    uint32_t number;
    char owner[32];
    char tf[8];
    inference_model *model;
    features_set *features;
    size_t candles;
    registry_meta meta; /* meta.trainer points into trainer */
    char *trainer;
    char digest[65];
};

/* Drops one reference; frees the version when it was the last. NULL is a
 * no-op. Thread-safe. */
void registry__version_unref(registry_version *v);

/* Version objects alive in this process (loaded or still referenced). */
extern atomic_long registry__versions_live;

/*
 * Reads name inside the directory dirfd without following a symlink at the
 * last component (O_NOFOLLOW), refusing anything but a regular file of at
 * most max bytes. Returns 0 and a malloc'd NUL-terminated buffer, or
 * PD_ENOTFOUND / PD_ETOOBIG / PD_EIO / PD_ENOMEM.
 */
int registry__read_at(int dirfd, const char *name, size_t max, char **out, size_t *len);

/* What a failed version is remembered by, so it is verified again only when
 * one of its files changes: the MANIFEST's content hash and the identity
 * (inode, size, mtime) of model.pb, scaler.pb and MANIFEST. */
typedef struct registry__fp {
    bool manifest_read;
    uint8_t manifest_sha[32];
    struct {
        bool present;
        uint64_t ino;
        int64_t size;
        int64_t mtime_ns;
    } f[3];
} registry__fp;

/* Fills *fp for the version directory vfd. Never fails: what cannot be
 * read is recorded as absent. */
void registry__fingerprint(int vfd, registry__fp *fp);
bool registry__fp_equal(const registry__fp *a, const registry__fp *b);

/*
 * Verifies and loads the version directory vfd: MANIFEST hashes, bounded
 * protobuf unpack, features, shapes, window, golden cases. On success
 * returns 0 and a new version with refs 1 (owner, tf and number copied in).
 * On failure returns PD_EVERIFY (or PD_ENOMEM) with a one-line reason in
 * why and the category (enum registry_fail) in *fail. Thread-safe; does
 * not touch any registry state.
 */
int registry__load_at(int vfd, const char *owner, const char *tf, uint32_t number,
                      registry_version **out, int *fail, char *why, size_t whylen);

/* Parses a version directory name: a positive decimal integer without
 * leading zeros, at most REGISTRY__MAX_VERSION. Returns 0 when invalid. */
uint32_t registry__parse_version(const char *name);
/* Temporary directories (a name starting with '.') older than this in a
 * series directory are a publish that died half-way (a killed `train`): a
 * scan or a publish removes them. */
#define REGISTRY__TMP_MAX_AGE_S 3600

/* Removes the abandoned temporaries of the series directory sfd (real
 * directories whose name starts with '.', last modified max_age_s ago or
 * more, with the plain files inside them; never following a symlink).
 * Returns how many it removed; logs each. */
int registry__sweep_temporaries(int sfd, const char *sym, const char *tf, int64_t max_age_s);

/* Parses a policy.json text as the scanner does and discards the result:
 * 0, PD_EPARSE with the reason in why, or PD_ENOMEM. For tests and fuzzing; pure,
 * thread-safe. */
int registry__policy_check(const char *text, size_t len, char *why, size_t whylen);

/* Opens the directory dirfd refers to for a fresh readdir() walk, on a
 * duplicate of the descriptor (dirfd stays open and usable). Returns the
 * stream (closedir() it) or NULL with errno set. */
DIR *registry__walk_dir(int dirfd);

#endif
