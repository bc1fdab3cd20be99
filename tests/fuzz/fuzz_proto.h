/* fuzz_proto.h: the job whose coordinator fuzz_proto drives, shared with
 * mkseeds (which writes seed message sequences for it). Input layout:
 * byte 0 picks W = 1 + b % 3 workers, byte 1 the config variant (FZP_*
 * bits), then messages, each a 16-bit little-endian length and that many
 * bytes, in the order the coordinator asks for them: per step one record
 * from each worker in rank order, after an epoch's last step worker 0's
 * epoch record, at the end one done message per worker. */
#ifndef CLIPD_FUZZ_PROTO_H
#define CLIPD_FUZZ_PROTO_H

#include <stdio.h>

#include "common/cfg.h"

enum { FZP_ADDING = 1,     /* data.source adding (no embedding, no perplexity), else markov */
       FZP_ONE_EPOCH = 2,  /* train.epochs 1, else 2 */
       FZP_TENSORS_2 = 4,  /* log.tensor_norms_every 2, else 1 */
       FZP_METRICS = 8 };  /* metrics on 127.0.0.1:0, else off */
#define FZP_STEPS 3        /* train.steps_per_epoch */

static int fzp_workers(unsigned char b) { return 1 + b % 3; }

static void fzp_config(Config *c, unsigned variant, const char *run_dir)
{
    cfg_defaults(c);
    snprintf(c->run_dir, sizeof c->run_dir, "%s", run_dir);
    c->model_vocab = 8, c->model_embed = 4, c->model_hidden = 4, c->model_layers = 2;
    c->data_source = variant & FZP_ADDING ? DATA_ADDING : DATA_MARKOV;
    c->data_markov_order = 1, c->data_markov_branch = 2;
    c->data_seq_len = 4, c->data_batch_per_worker = 2;
    c->train_epochs = variant & FZP_ONE_EPOCH ? 1 : 2;
    c->train_steps_per_epoch = FZP_STEPS;
    c->divergence_window = 4, c->divergence_warmup = 4; /* warmup <= window */
    c->log_tensor_norms_every = variant & FZP_TENSORS_2 ? 2 : 1;
    snprintf(c->metrics_listen, sizeof c->metrics_listen, "%s",
             variant & FZP_METRICS ? "127.0.0.1:0" : "off");
}

#endif
