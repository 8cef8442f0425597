"""The pliers.deploy lab: real Docker hosts, a private registry and reference images.

Not shipped in the collection (see galaxy.yml build_ignore). Run it with
``python3 -m lab --help`` or through the Makefile (``make lab-up HOSTS=3``).
"""
