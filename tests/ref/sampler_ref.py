#!/usr/bin/env python3
"""Independent NumPy reference for pipedit's flow-matching samplers (DESIGN.md section 5).

Reads a trace written by `test_sampler --trace FILE` and checks, for every case:
  - the schedule: sigmas = linspace(0.999 as f32, 0, N+1)[:-1] (dpm++: linspace(1, 0, N+1)[:-1]),
    shifted s*x/(1+(s-1)*x), then 0; timesteps = int(sigma * 1000);
  - the trajectory, recomputed here in float64 from the same initial latent on the same analytic
    model (Gaussian data, exact velocity: a fixed velocity function), step by step, within 1e-5
    relative (max |got - want| / max |want|) at every step; UniPC and DPM++ update with the sigmas
    rounded to f32, as the official Wan2.1 schedulers store them;
  - UniPC's first, a middle and the last step against closed-form formulas worked out by hand;
  - convergence to the exact ODE endpoint (known in closed form for Gaussian data).
The UniPC here is written in the paper's general form (history lists, the R/b system solved with
numpy.linalg.solve), not in the per-step closed form the C code uses; DPM++ in the DPM-Solver++(2M)
paper's form (Lu et al. 2022, algorithm 2: D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}), not in the C
code's per-element coefficients.
Exit status 0 when everything agrees."""
import math
import sys

import numpy as np

SIGMA_MAX = float(np.float32(0.999))
TOL = 2e-6  # the C sampler keeps samples in f32: a few roundings per step
REL = 1e-5  # and relative to the step's largest value


def schedule(n, shift, sigma_max=SIGMA_MAX):
    s = np.linspace(sigma_max, 0.0, n + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    ts = [int(x * 1000) for x in s]
    return np.concatenate([s, [0.0]]), ts


def velocity(x, sigma, mu, sd):
    a = 1.0 - sigma
    var = a * a * sd * sd + sigma * sigma
    d = x - a * mu
    e_eps = sigma / var * d
    e_x0 = mu + a * sd * sd / var * d
    return e_eps - e_x0


def truth(x, sigma0, mu, sd):
    a = 1.0 - sigma0
    z = (x - a * mu) / np.sqrt(a * a * sd * sd + sigma0 * sigma0)
    return mu + sd * z


def euler(sig, x, model):
    out = []
    for i in range(len(sig) - 1):
        x = x + (sig[i + 1] - sig[i]) * model(x, sig[i])
        out.append(x.copy())
    return out


def lam(sigma):
    return np.log(1.0 - sigma) - np.log(sigma)


def phis(h, order):
    """hh = -h (data prediction); returns h_phi_1, B(h) (bh2) and the vector b of the R/b system."""
    hh = -h
    h_phi_1 = np.expm1(hh)
    B = np.expm1(hh)
    b = []
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1
    for k in range(1, order + 1):
        b.append(h_phi_k * fact / B)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return h_phi_1, B, np.array(b)


def unipc(sig64, sig, x, model, record=None):
    """UniPC bh2, solver order 2, x0 prediction, lower order final; returns the trajectory. The model
    sees the f64 sigmas, the updates use sig (f32-rounded)."""
    n = len(sig) - 1
    ms, last, out, prev_order = [], None, [], 0
    for i in range(n):
        v = model(x, sig64[i])
        m = x - sig[i] * v
        if i > 0:  # UniC: correct x (at sig[i]) from last (at sig[i-1]) using m
            s0, t = sig[i - 1], sig[i]
            h = lam(t) - lam(s0)
            h_phi_1, B, b = phis(h, prev_order)
            m0 = ms[-1]
            rks, D1s = [], []
            for k in range(1, prev_order):
                rk = (lam(sig[i - 1 - k]) - lam(s0)) / h
                rks.append(rk)
                D1s.append((ms[-1 - k] - m0) / rk)
            rks.append(1.0)
            R = np.array([np.power(rks, k) for k in range(prev_order)])
            rhos = np.array([0.5]) if prev_order == 1 else np.linalg.solve(R, b)
            corr = sum(r * d for r, d in zip(rhos[:-1], D1s)) if D1s else 0.0
            x = t / s0 * last - (1 - t) * h_phi_1 * m0 - (1 - t) * B * (corr + rhos[-1] * (m - m0))
        ms.append(m)
        order = min(2, n - i, i + 1)
        last = x.copy()
        s0, t = sig[i], sig[i + 1]
        if t == 0.0:  # lambda_t = +inf: h -> inf, exp(-h) -> 0, the order-1 update is m itself
            assert order == 1
            x = m.copy()
        else:
            h = lam(t) - lam(s0)
            h_phi_1, B, b = phis(h, order)
            pred = 0.0
            if order == 2:
                r1 = (lam(sig[i - 1]) - lam(s0)) / h
                pred = 0.5 * (ms[-2] - m) / r1
            x = t / s0 * x - (1 - t) * h_phi_1 * m - (1 - t) * B * pred
        prev_order = order
        if record is not None:
            record.append(dict(i=i, m=m, v=v, last=last, x=x.copy()))
        out.append(x.copy())
    return out


def lam_inf(sigma):
    """lambda with its limits: -inf at sigma = 1 (the dpm++ schedule's start), +inf at 0."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log((1.0 - sigma) / sigma)


def dpmpp(sig64, sig, x, model):
    """DPM-Solver++(2M), data prediction, lower order on the first and last step."""
    n = len(sig) - 1
    prev, out = None, []
    for i in range(n):
        v = model(x, sig64[i])
        m = x - sig[i] * v
        s, t = sig[i], sig[i + 1]
        if t == 0.0:  # exp(-h) -> 0: the update is m itself
            x = m.copy()
        else:
            h = lam_inf(t) - lam_inf(s)
            if i == 0 or i == n - 1:
                d = m
            else:
                r = (lam_inf(s) - lam_inf(sig[i - 1])) / h  # inf after a start at sigma = 1
                d = (1.0 + 1.0 / (2.0 * r)) * m - 1.0 / (2.0 * r) * prev
            x = (t / s) * x - (1.0 - t) * (math.exp(-h) - 1.0) * d
        prev = m
        out.append(x.copy())
    return out


def closed_form_checks(sig64, sig, x0, model, rec, name):
    """Step 0, a middle step and the last step of UniPC against formulas written out by hand."""
    errs = []
    n = len(sig) - 1
    # step 0: order-1 predictor x1 = (s1/s0) x - (1-s1)(exp(-h)-1) m,  m = x - s0 v
    m = x0 - sig[0] * model(x0, sig64[0])
    if sig[1] > 0:
        a0, a1 = 1 - sig[0], 1 - sig[1]
        r = (a1 / sig[1]) / (a0 / sig[0])  # exp(h)
        want = sig[1] / sig[0] * x0 - a1 * (1.0 / r - 1.0) * m
    else:
        want = m
    errs.append(("first", np.max(np.abs(want - rec[0]["x"]))))
    # last step: the x0 prediction at the uncorrected sample of the last step
    want = rec[-1]["m"]
    errs.append(("last", np.max(np.abs(want - rec[-1]["x"]))))
    if n >= 4:
        i = n // 2
        pr, cur = rec[i - 1], rec[i]
        e = lambda s: (1 - s) / s  # exp(lambda)
        # corrector of order 2 from sig[i-1] to sig[i] with history at sig[i-2]
        s0, t, s1 = sig[i - 1], sig[i], sig[i - 2]
        h = np.log(e(t) / e(s0))
        q = np.exp(-h)  # e^{-h}
        r1 = np.log(e(s1) / e(s0)) / h
        B = q - 1
        g1 = (q - 1) / (-h) - 1
        g2 = g1 / (-h) - 0.5
        b1, b2 = g1 / B, 2 * g2 / B
        rho1 = (b1 - b2) / (1 - r1)
        rhot = b1 - rho1
        m0, m1, mt = rec[i - 1]["m"], rec[i - 2]["m"], cur["m"]
        xc = t / s0 * pr["last"] - (1 - t) * (q - 1) * m0 - (1 - t) * B * (rho1 * (m1 - m0) / r1 + rhot * (mt - m0))
        errs.append(("middle corrector", np.max(np.abs(xc - cur["last"]))))
        # predictor of order 2 from sig[i] to sig[i+1] with history at sig[i-1]
        s0, t, s1 = sig[i], sig[i + 1], sig[i - 1]
        h = np.log(e(t) / e(s0))
        q = np.exp(-h)
        r1 = np.log(e(s1) / e(s0)) / h
        xp = t / s0 * xc - (1 - t) * (q - 1) * mt - (1 - t) * (q - 1) * 0.5 * (m0 - mt) / r1
        errs.append(("middle predictor", np.max(np.abs(xp - cur["x"]))))
    bad = [(k, e) for k, e in errs if not e < 1e-9]
    if bad:
        print(f"FAIL {name}: closed-form mismatch {bad}")
    return not bad


def parse(path):
    cases, cur = [], None
    with open(path) as f:
        for line in f:
            tok = line.split()
            if not tok:
                continue
            key, rest = tok[0], tok[1:]
            if key in ("case", "schedule"):
                cur = dict(kind=key, steps=[])
                if key == "case":
                    cur["sampler"], cur["n"], cur["shift"] = rest[0], int(rest[1]), float(rest[2])
                else:
                    cur["n"], cur["shift"] = int(rest[0]), float(rest[1])
                cases.append(cur)
            elif key == "timesteps":
                cur[key] = [int(t) for t in rest]
            elif key == "step":
                cur["steps"].append(np.array([float(t) for t in rest[1:]]))
            else:
                cur[key] = np.array([float(t) for t in rest])
    return cases


def main():
    cases = parse(sys.argv[1])
    fails, checked, worst = 0, 0, 0.0
    errors, counts, worst_rel = {}, {}, {}
    for c in cases:
        name = f"{c.get('sampler', 'schedule')} steps={c['n']} shift={c['shift']}"
        sig, ts = schedule(c["n"], c["shift"], 1.0 if c.get("sampler") == "dpm++" else SIGMA_MAX)
        if not np.allclose(sig, c["sigmas"], rtol=0, atol=1e-15) or ts != c["timesteps"]:
            dt = [(i, a, b) for i, (a, b) in enumerate(zip(ts, c["timesteps"])) if a != b][:5]
            print(f"FAIL {name}: schedule differs (max sigma diff {np.max(np.abs(sig - c['sigmas'])):.3g}, timesteps {dt})")
            fails += 1
            continue
        checked += 1
        if c["kind"] == "schedule":
            continue
        mu, sd, x0 = c["mu"], c["sd"], c["x"]
        model = lambda x, s: velocity(x, s, mu, sd)
        rec = []
        sig32 = sig.astype(np.float32).astype(np.float64)  # the official schedulers' np.float32 sigmas
        if c["sampler"] == "euler":
            ref = euler(sig, x0.copy(), model)
        elif c["sampler"] == "dpm++":
            ref = dpmpp(sig, sig32, x0.copy(), model)
        else:
            ref = unipc(sig, sig32, x0.copy(), model, rec)
        counts[c["sampler"]] = counts.get(c["sampler"], 0) + 1
        got = c["steps"]
        if len(got) != len(ref):
            print(f"FAIL {name}: {len(got)} steps traced, want {len(ref)}")
            fails += 1
            continue
        for i, (g, r) in enumerate(zip(got, ref)):
            err = np.max(np.abs(g - r) / (1 + np.abs(r)))
            rel = np.max(np.abs(g - r)) / max(np.max(np.abs(r)), 1e-30)
            worst = max(worst, err)
            worst_rel[c["sampler"]] = max(worst_rel.get(c["sampler"], 0.0), rel)
            if not (err < TOL and rel < REL):
                print(f"FAIL {name}: step {i} differs by {err:.3g} ({rel:.3g} relative)\n  got  {g[:4]}\n  want {r[:4]}")
                fails += 1
                break
        if c["sampler"] == "unipc" and not closed_form_checks(sig, sig32, x0, model, rec, name):
            fails += 1
        errors[(c["sampler"], c["n"], c["shift"])] = np.max(np.abs(ref[-1] - truth(x0, sig[0], mu, sd)))
    # convergence of the reference itself: UniPC beats Euler and both approach the exact endpoint
    for shift in (1.0, 5.0, 12.0):
        eu = [errors.get(("euler", n, shift), np.inf) for n in (10, 20, 50)]
        un = [errors.get(("unipc", n, shift), np.inf) for n in (10, 20, 50)]
        dp = [errors.get(("dpm++", n, shift), np.inf) for n in (10, 20, 50)]
        print(f"shift {shift}: endpoint error euler {['%.2e' % e for e in eu]} unipc {['%.2e' % e for e in un]} "
              f"dpm++ {['%.2e' % e for e in dp]}")
        ok = eu[0] > eu[1] > eu[2] and un[0] > un[1] > un[2] and un[1] < eu[1] and un[2] < eu[2]
        ok = ok and dp[0] > dp[1] > dp[2] and dp[1] < eu[1] and dp[2] < eu[2]
        if shift == 1.0:  # a smooth schedule: second order shows
            ok = ok and un[2] < eu[2] / 20 and un[0] / un[1] > 3.2
        if not ok:
            print(f"FAIL convergence at shift {shift}")
            fails += 1
    combos = {k: len({(c["n"], c["shift"]) for c in cases if c.get("sampler") == k}) for k in counts}
    print(f"{checked} cases checked ({combos} (steps, shift) pairs per sampler), {fails} failures; largest "
          f"trajectory difference {worst:.3g} (tolerance {TOL:g}); largest relative difference per sampler "
          f"{ {k: float('%.3g' % v) for k, v in worst_rel.items()} } (tolerance {REL:g})")
    if combos.get("unipc", 0) < 54 or combos.get("dpm++", 0) < 54:
        print("FAIL fewer than 54 (steps, shift) pairs for unipc or dpm++")
        fails += 1
    return 1 if fails or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
