# shellcheck shell=bash
# Sourced by .ci/run: what scripts/container-test.sh's exit status means for this CI run.
# `container_verdict RC` prints one line and returns 0 (passed), 1 (failed) or 2 (not run, allowed).
# Exit 3 is "cannot run here": nothing was checked, so it is a failure, unless the machine is known
# to have no usable podman (ALLOW_CONTAINER_SKIP=1). test/unit/container-verdict.test.ts holds it to that.
container_verdict () {
  case $1 in
    0) echo "container test passed"; return 0 ;;
    3)
      if [[ "${ALLOW_CONTAINER_SKIP:-0}" == 1 ]]; then
        echo "container test CANNOT RUN HERE (allowed by ALLOW_CONTAINER_SKIP=1; nothing was checked)"
        return 2
      fi
      echo "container test FAILED: cannot run here (exit 3; nothing was checked; ALLOW_CONTAINER_SKIP=1 accepts that)"
      return 1
      ;;
    *) echo "container test FAILED (exit $1)"; return 1 ;;
  esac
}
