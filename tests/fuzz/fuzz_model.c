/*
 * libFuzzer target: bytes as a model.pb. Unpacks with the registry's
 * budgeted reader path (via a temporary file is too slow: use the same
 * protobuf-c unpack and inference_model_build a registry load does) and
 * must never crash, leak or read out of bounds, whatever the input.
 */
#include <stdint.h>
#include <stdlib.h>

#include "inference/inference.h"
#include "proto/model.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Predictd__Model *m = predictd__model__unpack(NULL, size, data);
    if (!m)
        return 0;
    Predictd__Scaler sc = PREDICTD__SCALER__INIT;
    double mean[64] = {0}, scale[64];
    for (int i = 0; i < 64; i++)
        scale[i] = 1;
    sc.n_mean = sc.n_scale = m->n_features < 64 ? m->n_features : 64;
    sc.mean = mean;
    sc.scale = scale;
    inference_model *im = NULL;
    char why[256];
    if (inference_model_build(m, &sc, &im, why, sizeof why) == 0) {
        (void)inference_check_golden(im, m, 1e-6, why, sizeof why);
        inference_model_free(im);
    }
    predictd__model__free_unpacked(m, NULL);
    return 0;
}
