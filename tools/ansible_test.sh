#!/usr/bin/env bash
# ansible-test sanity and units on an installed copy of the collection, with one venv's ansible-core:
#   tools/ansible_test.sh <venv> <collection dir (…/ansible_collections/pliers/deploy)> [<venv run before>]
# Full sanity and units on Python 3.12; compile, import and units on each other target Python, but those the venv
# run before (its ansible-core's own targets) covered already.
# A target Python this machine lacks runs in the lab's image of it instead (tests/lab/test_target_pythons.py).
# ansible-test bootstraps pip in its test venvs with a script from ci-files.testing.ansible.com, which these
# machines cannot reach: tools/get_pip.py stands in for it (pip from ensurepip, then from the package index).
set -euo pipefail
venv=$(realpath "$1")
collection=$2
requirements=$(echo "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
pip_version=$(grep -oP "pip='\K[0-9.]+" "$requirements")
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
[ -e "$cache" ] || install -D -m 0644 "$(dirname "$0")/get_pip.py" "$cache"
# Every Python this ansible-core supports on targets; ansible-test finds each as pythonX.Y on the PATH (pyenv machines
# keep theirs outside it).
target_pythons() {
  "$1/bin/python" -c 'from ansible_test._util.target.common.constants import \
    REMOTE_ONLY_PYTHON_VERSIONS as remote, CONTROLLER_PYTHON_VERSIONS as controller; print(*remote, *controller)'
}
read -r -a targets < <(target_pythons "$venv")
[ "${#targets[@]}" -gt 0 ] || { echo "error: no target Python versions from $venv's ansible-test" >&2; exit 1; }
covered=()
if [ -n "${3:-}" ]; then read -r -a covered < <(target_pythons "$(realpath "$3")"); fi
search=$venv/bin:$PATH
for version in "${targets[@]}"; do
  for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin; do
    if [ -x "$dir/python$version" ]; then search=$search:$dir; fi
  done
done
found=()
for version in "${targets[@]}"; do
  if PATH=$search command -v "python$version" > /dev/null; then found+=("$version"); fi
done
missing=$(printf '%s\n' "${targets[@]}" "${found[@]}" | sort | uniq -u | xargs)
# The oldest target Python is the one the code is likeliest to break on: CI must have it.
if [ "${CI:-}" = true ] && [ "${found[0]:-}" != "${targets[0]}" ]; then
  echo "error: Python ${targets[0]}, the oldest this ansible-core supports on targets, is not on this machine" >&2
  exit 1
fi
cd "$collection"
others=()
for version in "${found[@]}"; do
  if [ "$version" != 3.12 ] && ! printf '%s\n' "${covered[@]}" | grep -qxF "$version"; then others+=("$version"); fi
done
before=${covered[*]:+ (not those the ansible-core run before covered: ${covered[*]})}
absent=${missing:+ (not on this machine: $missing)}
echo "ansible-test of $("$venv/bin/ansible" --version | sed -n 1p): sanity and units on Python 3.12;" \
  "the target code's compile, import and units on ${others[*]:-no other Python}$before$absent"
PATH=$search ansible-test sanity --venv --python 3.12
PATH=$search ansible-test units --venv --python 3.12
for version in "${others[@]}"; do
  PATH=$search ansible-test sanity --venv --python "$version" --test compile --test import
  PATH=$search ansible-test units --venv --python "$version"
done
