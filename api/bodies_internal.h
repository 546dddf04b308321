/*
 * bodies_internal.h: the JSON bodies of the admin routes, parsed by pure
 * functions (bodies.c) so the handlers only act on plain values and the
 * fuzz targets can reach every parser without a server. Each returns 0
 * with its outputs written, or a PD_* code (PD_EPARSE: not a JSON object;
 * PD_EINVAL: a bad value) with the client-facing reason in why; outputs are
 * left untouched on error. No I/O, no state: thread-safe.
 */
#ifndef PREDICTD_BODIES_INTERNAL_H
#define PREDICTD_BODIES_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "training/training.h"

/* POST /admin/models/reload: {} or {"symbol": S, "timeframe": TF}.
 * symbol and tf are "" when the body names no series. */
int api__body_reload(const char *body, size_t len, char symbol[24], char tf[8], char *why,
                     size_t whylen);

/* POST /admin/models/{symbol}/{timeframe}/pin: {"version": N}, N >= 1. */
int api__body_pin(const char *body, size_t len, uint32_t *version, char *why, size_t whylen);

/* POST .../labels: {"label": "stable"|"canary", "version": N (0 removes),
 * "canary_share": 0..100}. */
int api__body_label(const char *body, size_t len, char label[16], uint32_t *version, int *share,
                    char *why, size_t whylen);

/* POST /admin/training: an object of training_params_set names (values
 * strings, numbers, booleans or arrays of them), over the defaults with
 * promote_if_better on; validated. */
int api__body_training(const char *body, size_t len, training_params *p, char *why, size_t whylen);

#endif
