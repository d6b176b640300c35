/* Deployments of N GPUs, evaluated with the cost model (plan/cost.h) and the simulator (plan/sim.h),
 * and the search `pipedit plan` runs over them. Pure: no processes, no devices.
 *
 * A deployment is `replicas` identical pipelines. Each has a denoise group of `den` GPUs (one SP
 * group of den ranks, or with CFG parallelism two SP groups of den/2 ranks, one per element of the
 * CFG pair) and `dec` decode GPUs (DeDiVAE; 0: the denoise group decodes each latent itself before
 * taking the next request). The text encoder lives on the first denoise GPU of a replica and
 * encodes there before denoising. The VAE decodes a latent on one GPU, streaming. With Aco the
 * decode GPUs lend attention to the denoise ranks while none of them is decoding. */
#ifndef PD_PLAN_DEPLOY_H
#define PD_PLAN_DEPLOY_H

#include <stdbool.h>

#include "plan/cost.h"
#include "plan/sim.h"

typedef struct pd_plan_deploy {
    int replicas, den, dec;
    bool cfg_parallel;
    int g;    /* PipeSP chunk: 0 one chunk (Ulysses), -1 the fastest g, > 0 that g */
    bool aco;
} pd_plan_deploy;

/* What the deployments are compared on. rate > 0: `requests` arrive evenly at that rate and the
 * lowest p99 latency wins; rate 0: `requests` arrive at once (back to back, as the PipeDiT paper's
 * consecutive prompts) and the highest throughput wins. Scores within PD_PLAN_TIE of the best are a
 * tie, which the lower latency of a lone request breaks. */
#define PD_PLAN_TIE 0.02
typedef struct pd_plan_goal {
    double rate;
    int requests;
} pd_plan_goal;

typedef struct pd_plan_eval {
    pd_plan_deploy d;
    int sp;              /* ranks per SP group */
    pd_plan_step step;   /* a step without Aco */
    pd_plan_step step_aco; /* a step while the decoders lend (equals step without Aco) */
    pd_sim_stages stages;
    double alone_s;      /* one request on the idle deployment */
    pd_sim_result stream;
    double mem_den, mem_dec; /* bytes on the fullest denoise / decode GPU (0 when none) */
    bool fits;
    char why_not[200];   /* when !fits: which GPU needs how much */
    double score;        /* pd_plan_score under the goal it was evaluated for */
    bool tied_best;      /* fits, and its score is within PD_PLAN_TIE of the best (pd_plan_search) */
    int order;           /* its place in pd_plan_search's enumeration */
} pd_plan_eval;

/* Evaluates one deployment. PD_ERR_INVALID (naming the field) for a deployment that is not one:
 * replicas, den < 1, dec < 0, CFG parallelism without CFG or with an odd den, more SP ranks than
 * heads, Aco without decoders; and the cost model's and simulator's errors. A deployment that does
 * not fit in memory is evaluated all the same, with fits false and why_not saying why. */
pd_status pd_plan_evaluate(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r,
                           const pd_plan_deploy *d, const pd_plan_goal *goal, pd_plan_eval *out);

/* Lower is better: p99 at the goal's rate, or the makespan of the back-to-back stream. */
double pd_plan_score(const pd_plan_eval *e, const pd_plan_goal *goal);

/* Evaluates every deployment of exactly `gpus` GPUs (1..64): each replica count dividing gpus, each
 * den/dec split of a replica, with and without CFG parallelism (CFG requests, even den), Ulysses and
 * PipeSP (the fastest g; left out where it is Ulysses' single chunk), with and without Aco (dec > 0).
 * *out (the caller frees it) holds *n evaluations, best first: those tied with the best score by
 * their latency alone, the other fitting ones by score, then those that do not fit by their memory
 * need (remaining ties: the enumeration order).
 * PD_ERR_INVALID for gpus or goal out of range, PD_ERR_NOMEM, and pd_plan_evaluate's errors. */
pd_status pd_plan_search(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r, int gpus,
                         const pd_plan_goal *goal, pd_plan_eval **out, int *n);

/* A one-line description of the deployment ("2 x [den 3 SP3 PipeSP g=2 | dec 1 Aco 2/4]"). */
void pd_plan_describe(const pd_plan_eval *e, char *buf, size_t n);

#endif
