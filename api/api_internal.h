/*
 * api_internal.h: what the api module's files share and nothing outside
 * api/ may include: the context.
 */
#ifndef PREDICTD_API_INTERNAL_H
#define PREDICTD_API_INTERNAL_H

#include "api/api.h"

struct api_hub;

struct api_context {
    api_options opt;      /* read-only */
    predict_service *svc; /* borrowed: the caller keeps it alive longer */
    struct api_hub *hub;  /* stream clients (streams.c); internally locked */
};

int api_hub_new(struct api_hub **out);
void api_hub_free(struct api_hub *h); /* NULL is a no-op; no client may remain */

#endif
