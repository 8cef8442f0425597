#!/usr/bin/env bash
# ansible-test sanity and units on an installed copy of the collection, with one venv's ansible-core:
#   tools/ansible_test.sh <venv> <collection dir (…/ansible_collections/pliers/deploy)>
# ansible-test bootstraps pip in its test venvs with a script from ci-files.testing.ansible.com, which these
# machines cannot reach: tools/get_pip.py stands in for it (pip from ensurepip, then from the package index).
set -euo pipefail
venv=$(realpath "$1")
collection=$2
requirements=$(echo "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
pip_version=$(grep -oP "pip='\K[0-9.]+" "$requirements")
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
[ -e "$cache" ] || install -D -m 0644 "$(dirname "$0")/get_pip.py" "$cache"
cd "$collection"
echo "ansible-test of $("$venv/bin/ansible" --version | sed -n 1p): sanity, units"
PATH=$venv/bin:$PATH ansible-test sanity --venv --python 3.12
PATH=$venv/bin:$PATH ansible-test units --venv --python 3.12
