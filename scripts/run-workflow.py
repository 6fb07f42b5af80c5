#!/usr/bin/env python3
"""Runs a GitHub Actions workflow file's jobs on this machine, the way GitHub would run them
for a pull request: jobs in `needs` order, each matrix expanded, a fresh clone of the
pull request per job, `${{ }}` expressions evaluated, `if:` conditions honoured, outputs,
caches and artifacts passed between steps and jobs through directories.

Only what pv's workflows use is implemented, and anything else is refused rather than
skipped: `run` steps (bash, -eo pipefail), and the actions `actions/checkout`,
`actions/setup-python` and `dtolnay/rust-toolchain` (the machine's own Python and Rust
stand in), `actions/cache` (a directory per key; restore by key or prefix, save at the end
of a successful job), `actions/upload-artifact` and `actions/download-artifact`
(`name` or `pattern`). Expressions: `github.event.pull_request.base.sha`,
`github.event.pull_request.head.sha`, `github.sha`, `matrix.*`, `env.*`, `runner.os`,
`runner.temp`, `steps.<id>.outputs.*`, `needs.<job>.result`, `hashFiles(...)`, and the
status functions `always()`, `success()`, `failure()`, `cancelled()`.

    scripts/run-workflow.py .github/workflows/pv-gate.yml --repo REPO --base BASE --head HEAD \
        [--work DIR] [--cache DIR]
    scripts/run-workflow.py .github/workflows/pv-gate.yml --repo . --base HEAD --head HEAD --check

--check runs nothing: it orders the jobs, expands the matrices, evaluates every expression
it can before run time (step outputs are empty) and refuses what it could not run, then
prints the plan as JSON (the test suite reads it).

Exit 0 when every job succeeded, 1 when one failed, 2 for a workflow it cannot run.
"""

import argparse
import fnmatch
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time

import yaml


class Unsupported(Exception):
    pass


def toposort(jobs):
    order, seen = [], set()

    def visit(name, stack):
        if name in seen:
            return
        if name in stack:
            raise Unsupported(f"needs cycle at {name}")
        needs = jobs[name].get("needs", [])
        for n in [needs] if isinstance(needs, str) else needs:
            if n not in jobs:
                raise Unsupported(f"job {name} needs unknown job {n}")
            visit(n, stack + [name])
        seen.add(name)
        order.append(name)

    for name in jobs:
        visit(name, [])
    return order


def expand_matrix(job):
    strategy = job.get("strategy") or {}
    matrix = strategy.get("matrix")
    if not matrix:
        return [{}]
    for k in matrix:
        if k in ("include", "exclude"):
            raise Unsupported("matrix include/exclude")
    keys = list(matrix)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(matrix[k] for k in keys))]


class Context:
    """What expressions can see while a job runs."""

    def __init__(self, event, matrix, env, runner_temp, workspace, needs):
        self.event = event
        self.matrix = matrix
        self.env = env
        self.runner_temp = runner_temp
        self.workspace = workspace
        self.steps = {}
        self.needs = needs
        self.status = "success"

    def lookup(self, path):
        parts = path.split(".")
        if parts[:3] == ["github", "event", "pull_request"]:
            v = self.event["pull_request"]
            for p in parts[3:]:
                v = v[p]
            return v
        if path == "github.sha":
            return self.event["pull_request"]["head"]["sha"]
        if parts[0] == "matrix":
            return self.matrix[parts[1]]
        if parts[0] == "env":
            return self.env.get(parts[1], "")
        if path == "runner.os":
            return "Linux"
        if path == "runner.temp":
            return self.runner_temp
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return self.steps.get(parts[1], {}).get(parts[3], "")
        if parts[0] == "needs" and len(parts) == 3 and parts[2] == "result":
            return self.needs[parts[1]]
        raise Unsupported(f"expression {path}")

    def evaluate(self, expr):
        expr = expr.strip()
        calls = {
            "always()": True,
            "success()": self.status == "success",
            "failure()": self.status == "failure",
            "cancelled()": False,
        }
        if expr in calls:
            return calls[expr]
        m = re.fullmatch(r"hashFiles\((.*)\)", expr)
        if m:
            pats = [p.strip().strip("'\"") for p in m.group(1).split(",")]
            h = hashlib.sha256()
            files = sorted(
                {f for p in pats for f in glob.glob(os.path.join(self.workspace, p), recursive=True)
                 if os.path.isfile(f)})
            for f in files:
                h.update(hashlib.sha256(open(f, "rb").read()).digest())
            return h.hexdigest() if files else ""
        if re.fullmatch(r"[A-Za-z_][\w.-]*", expr):
            return self.lookup(expr)
        raise Unsupported(f"expression {expr!r}")

    def substitute(self, value):
        if isinstance(value, str):
            return re.sub(r"\$\{\{(.*?)\}\}", lambda m: str(self.evaluate(m.group(1))), value)
        if isinstance(value, list):
            return [self.substitute(v) for v in value]
        if isinstance(value, dict):
            return {k: self.substitute(v) for k, v in value.items()}
        return value

    def condition(self, cond, default="success()"):
        cond = cond if cond is not None else default
        if isinstance(cond, bool):
            return cond
        cond = cond.strip()
        if cond.startswith("${{") and cond.endswith("}}"):
            cond = cond[3:-2]
        v = self.evaluate(cond)
        return bool(v) and v != "false"


def read_kv(path):
    """A GITHUB_OUTPUT / GITHUB_ENV file: NAME=VALUE lines (and NAME<<EOF blocks)."""
    out = {}
    if not os.path.exists(path):
        return out
    lines = open(path).read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def copy_into(src, dest):
    if os.path.isdir(src):
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True)
    elif os.path.exists(src):
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        shutil.copy2(src, dest)


def log(msg):
    print(msg, flush=True)


class Runner:
    def __init__(self, args, workflow):
        self.args = args
        self.workflow = workflow
        self.work = os.path.abspath(args.work)
        self.cache_dir = os.path.abspath(args.cache or os.path.join(self.work, "cache"))
        self.artifacts = os.path.join(self.work, "artifacts")
        for d in (self.work, self.cache_dir, self.artifacts):
            os.makedirs(d, exist_ok=True)
        rev = lambda r: subprocess.check_output(
            ["git", "-C", args.repo, "rev-parse", r], text=True).strip()
        self.event = {"pull_request": {"base": {"sha": rev(args.base)},
                                       "head": {"sha": rev(args.head)}}}

    def run(self):
        jobs = self.workflow["jobs"]
        results = {}
        for name in toposort(jobs):
            job = jobs[name]
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            need_results = {n: results[n] for n in needs}
            ctx0 = Context(self.event, {}, {}, "", "", need_results)
            ctx0.status = "success" if all(r == "success" for r in need_results.values()) else "failure"
            if not ctx0.condition(job.get("if")):
                log(f"== job {name}: skipped (if: {job.get('if', 'success()')})")
                results[name] = "skipped"
                continue
            outcomes = []
            for matrix in expand_matrix(job):
                outcomes.append(self.run_job(name, job, matrix, need_results))
            results[name] = "success" if all(outcomes) else "failure"
            log(f"== job {name}: {results[name]}")
        return results

    def run_job(self, name, job, matrix, need_results):
        label = name + "".join(f"-{v}" for v in matrix.values())
        root = os.path.join(self.work, "jobs", label)
        shutil.rmtree(root, ignore_errors=True)
        workspace = os.path.join(root, "workspace")
        temp = os.path.join(root, "temp")
        os.makedirs(temp)
        env = dict(os.environ)
        # The machine's own caches of the user's cargo and pip stand in for the runner
        # image's; the job's HOME is its own, so actions/cache paths under ~ are per job.
        home = os.path.join(root, "home")
        os.makedirs(home)
        for d in (".cargo", ".rustup"):
            src = os.path.join(os.path.expanduser("~"), d)
            if os.path.isdir(src) and d == ".rustup":
                os.symlink(src, os.path.join(home, d))
        env.update({
            "HOME": home,
            "CARGO_HOME": os.environ.get("CARGO_HOME", os.path.join(os.path.expanduser("~"), ".cargo")),
            "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.join(os.path.expanduser("~"), ".rustup")),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": workspace,
            "RUNNER_TEMP": temp,
            "RUNNER_OS": "Linux",
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_SHA": self.event["pull_request"]["head"]["sha"],
        })
        ctx = Context(self.event, matrix, env, temp, workspace, need_results)
        for scope in (self.workflow.get("env") or {}, job.get("env") or {}):
            for k, v in scope.items():
                env[k] = str(ctx.substitute(v))
        log(f"== job {label} (fresh clone in {workspace})")
        subprocess.run(["git", "clone", "-q", "--no-local", self.args.repo, workspace], check=True)
        subprocess.run(["git", "-C", workspace, "checkout", "-q", "--detach",
                        self.event["pull_request"]["head"]["sha"]], check=True)
        saves = []
        started = time.time()
        for i, step in enumerate(job["steps"]):
            title = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            if not ctx.condition(step.get("if")):
                log(f"   skip  {title}")
                continue
            t0 = time.time()
            try:
                ok = self.step(step, ctx, env, workspace, temp, saves, label)
            except Unsupported:
                raise
            except Exception as e:  # a step that could not run fails, as on GitHub
                log(f"   error {title}: {e}")
                ok = False
            log(f"   {'ok  ' if ok else 'FAIL'}  {title} ({time.time() - t0:.0f} s)")
            if not ok:
                ctx.status = "failure"
        if ctx.status == "success":
            for key, paths in saves:
                self.cache_save(key, paths, workspace)
        log(f"   job {label}: {ctx.status} in {time.time() - started:.0f} s")
        return ctx.status == "success"

    def step(self, step, ctx, env, workspace, temp, saves, label):
        with_ = ctx.substitute(step.get("with") or {})
        step_env = dict(env)
        for k, v in (step.get("env") or {}).items():
            step_env[k] = str(ctx.substitute(v))
        if "run" in step:
            script = ctx.substitute(step["run"])
            out_file = os.path.join(temp, f"output-{time.time_ns()}")
            env_file = os.path.join(temp, f"env-{time.time_ns()}")
            open(out_file, "w").close()
            open(env_file, "w").close()
            step_env["GITHUB_OUTPUT"] = out_file
            step_env["GITHUB_ENV"] = env_file
            path = os.path.join(temp, f"step-{time.time_ns()}.sh")
            open(path, "w").write(script)
            log_path = os.path.join(os.path.dirname(temp), "log.txt")
            with open(log_path, "a") as logf:
                logf.write(f"\n### {step.get('name', '')}\n")
                logf.flush()
                r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", path],
                                   cwd=os.path.join(workspace, step.get("working-directory", "")),
                                   env=step_env, stdout=logf, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
            if "id" in step:
                ctx.steps[step["id"]] = read_kv(out_file)
            env.update(read_kv(env_file))
            if r.returncode != 0:
                tail = open(log_path).read().splitlines()[-15:]
                log("\n".join("      | " + l for l in tail))
            return r.returncode == 0
        uses = step.get("uses", "")
        action = uses.split("@")[0]
        if action == "actions/checkout":
            depth = str(with_.get("fetch-depth", 1))
            if depth != "0":
                log("      (a full clone stands in for a shallow checkout)")
            return True
        if action in ("actions/setup-python", "dtolnay/rust-toolchain"):
            return True
        if action == "actions/cache":
            key = with_["key"]
            paths = [p for p in with_["path"].splitlines() if p.strip()]
            hit = self.cache_restore(key, with_.get("restore-keys", ""), paths, workspace, env)
            if "id" in step:
                ctx.steps[step["id"]] = {"cache-hit": "true" if hit == key else "false"}
            if hit != key:
                saves.append((key, [(p, env) for p in paths]))
            log(f"      cache {key}: {'hit' if hit == key else ('restored ' + hit if hit else 'miss')}")
            return True
        if action == "actions/upload-artifact":
            src = os.path.join(workspace, with_["path"])
            dest = os.path.join(self.artifacts, with_["name"])
            if not os.path.exists(src):
                if with_.get("if-no-files-found", "warn") == "error":
                    return False
                return True
            shutil.rmtree(dest, ignore_errors=True)
            copy_into(src, dest)
            return True
        if action == "actions/download-artifact":
            dest = os.path.join(workspace, with_.get("path", "."))
            names = sorted(os.listdir(self.artifacts))
            if "name" in with_:
                if with_["name"] not in names:
                    return False
                copy_into(os.path.join(self.artifacts, with_["name"]), dest)
            else:
                for n in fnmatch.filter(names, with_.get("pattern", "*")):
                    copy_into(os.path.join(self.artifacts, n), os.path.join(dest, n))
            return True
        raise Unsupported(f"action {uses}")

    def _path(self, p, workspace, env):
        p = os.path.expanduser(p.strip()).replace("~", env["HOME"], 1) if p.strip().startswith("~") else p.strip()
        return p if os.path.isabs(p) else os.path.join(workspace, p)

    def cache_restore(self, key, restore_keys, paths, workspace, env):
        entries = sorted(os.listdir(self.cache_dir), key=lambda e: -os.path.getmtime(os.path.join(self.cache_dir, e)))
        pick = key if key in entries else None
        if pick is None:
            for prefix in [k.strip() for k in restore_keys.splitlines() if k.strip()]:
                pick = next((e for e in entries if e.startswith(prefix)), None)
                if pick:
                    break
        if pick is None:
            return None
        for i, p in enumerate(paths):
            src = os.path.join(self.cache_dir, pick, str(i))
            if os.path.exists(src):
                copy_into(src, self._path(p, workspace, env))
        return pick

    def cache_save(self, key, paths, workspace):
        dest = os.path.join(self.cache_dir, key)
        if os.path.exists(dest):
            return
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for i, (p, env) in enumerate(paths):
            src = self._path(p, workspace, env)
            if os.path.exists(src):
                copy_into(src, os.path.join(tmp, str(i)))
        os.replace(tmp, dest)


ACTIONS = {"actions/checkout", "actions/setup-python", "dtolnay/rust-toolchain",
           "actions/cache", "actions/upload-artifact", "actions/download-artifact"}


def plan(workflow, event, repo):
    """The jobs as they would run, nothing run: order, matrix instances, env, and each
    step with its expressions evaluated (step outputs empty)."""
    jobs = workflow["jobs"]
    out = []
    for name in toposort(jobs):
        job = jobs[name]
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        for matrix in expand_matrix(job):
            ctx = Context(event, matrix, {}, "$RUNNER_TEMP", repo, {n: "success" for n in needs})
            env = {}
            for scope in (workflow.get("env") or {}, job.get("env") or {}):
                for k, v in scope.items():
                    env[k] = str(ctx.substitute(v))
            ctx.env = env
            ctx.condition(job.get("if"))
            steps = []
            for step in job["steps"]:
                ctx.condition(step.get("if"))
                uses = step.get("uses")
                if uses and uses.split("@")[0] not in ACTIONS:
                    raise Unsupported(f"action {uses}")
                if not uses and "run" not in step:
                    raise Unsupported(f"a step with neither run nor uses in job {name}")
                steps.append({
                    "name": step.get("name"),
                    "id": step.get("id"),
                    "if": step.get("if"),
                    "uses": uses,
                    "with": ctx.substitute(step.get("with") or {}),
                    "run": ctx.substitute(step["run"]) if "run" in step else None,
                })
            out.append({"job": name, "needs": needs, "if": job.get("if"), "matrix": matrix,
                        "env": env, "steps": steps})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow")
    ap.add_argument("--repo", required=True, help="the git repository holding both revisions")
    ap.add_argument("--base", required=True, help="the pull request's base revision")
    ap.add_argument("--head", required=True, help="the pull request's head revision")
    ap.add_argument("--work", default="target/workflow-run", help="where jobs, caches and artifacts go")
    ap.add_argument("--cache", help="the actions/cache directory (kept across runs)")
    ap.add_argument("--check", action="store_true", help="print the plan, run nothing")
    args = ap.parse_args()
    args.repo = os.path.abspath(args.repo)
    workflow = yaml.safe_load(open(args.workflow))
    if True in workflow and "on" not in workflow:  # YAML 1.1 reads `on:` as true
        workflow["on"] = workflow.pop(True)
    if "pull_request" not in (workflow.get("on") or {}):
        print(f"{args.workflow}: not a pull_request workflow", file=sys.stderr)
        return 2
    try:
        if args.check:
            rev = lambda r: subprocess.check_output(
                ["git", "-C", args.repo, "rev-parse", r], text=True).strip()
            event = {"pull_request": {"base": {"sha": rev(args.base)}, "head": {"sha": rev(args.head)}}}
            print(json.dumps(plan(workflow, event, args.repo), indent=1))
            return 0
        results = Runner(args, workflow).run()
    except Unsupported as e:
        print(f"{args.workflow}: cannot run: {e}", file=sys.stderr)
        return 2
    print(json.dumps(results))
    return 0 if all(r in ("success", "skipped") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
