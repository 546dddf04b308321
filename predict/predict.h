/*
 * predict: the prediction service. It turns a series' candles and the model
 * serving it into a prediction, keeps predictions in the process and Redis
 * caches, follows live accuracy, fans new predictions out to stream
 * clients, and runs the inference loop that reacts to new candles.
 *
 *   resolver.c   settling ledger rows against the candles after them
 *
 * Depends on registry, features, inference and store; knows nothing of
 * HTTP.
 */
#ifndef PREDICTD_PREDICT_H
#define PREDICTD_PREDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "features/features.h"
#include "store/store.h"

/*
 * The ledger's resolver, pure (resolver.c). Settles entry e against the
 * candles that followed it: * `after` holds candles of the same series in ascending open time (those at
 * or before e->candle_time and past the horizon are ignored; gaps are
 * allowed), and last_closed_open is the open time of the series' latest
 * closed candle, which says whether the horizon is complete (no candle can
 * still arrive inside it) when the data ends early.
 *
 * Rules (R = |entry - stop_loss|; candle j is the j-th timeframe after
 * candle_time, j = 1..horizon):
 * - Trade (LONG/SHORT only, on its levels): a candle whose range reaches
 *   the stop ends it (reaching the stop and a target in one candle counts
 *   as the stop); else each take-profit reached is noted and TP3 ends it.
 *   The outcome is the highest take-profit reached before the end, r =
 *   that level's R multiple (|tp - entry| / R); SL (r = -1) when none was;
 *   at the end of a complete horizon without either, EXPIRED with r the
 *   mark-to-market of the last close in the horizon (0 without candles).
 *   mfe/mae span the candles from the entry to the deciding one.
 * - Realised class: the triple barrier of the training labels, on both
 *   sides with the entry's risk R and its TP1 multiple: a side wins when
 *   its TP1 is reached before its stop (the same candle counts as the
 *   stop); LONG or SHORT is the side that wins first, NO_TRADE when both
 *   win in the same candle, neither wins, or the horizon ends.
 * An entry is settled once both are decided (for NO_TRADE, the class
 * only: outcome NONE). Otherwise out->outcome is STORE_OUTCOME_OPEN.
 * The walk is the one triple barrier of inference/barrier.c, as the
 * training labels'.
 *
 * Returns 0 and fills *out, or PD_EINVAL (out untouched) for a NULL
 * argument, tf_seconds <= 0, horizon 0, levels that are not finite and
 * positive, stop equal to entry, take-profits on the wrong side or out of
 * order, or LONG/SHORT levels that disagree with the direction.
 * Thread-safe.
 */
int predict_resolve(const store_ledger_entry *e, int64_t tf_seconds, const features_candle *after,
                    size_t n, int64_t last_closed_open, store_ledger_resolution *out);


#endif
