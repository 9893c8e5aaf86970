# pandasai.pod_sandbox: every target does its own set-up on a fresh machine.
#   make deploy   deploy the sandbox to the local cluster (inventories/local) and say how to reach it
#   make test     the whole test suite: static checks, executor and client unit tests, real-cluster tests
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help bootstrap deploy test test-static test-unit test-cluster bench teardown

help:
	@sed -n 's/^#   //p' Makefile

bootstrap:
	@scripts/bootstrap.sh

deploy: bootstrap
	@scripts/deploy.sh

test: bootstrap test-static test-unit test-cluster

test-static: bootstrap
	@scripts/test-static.sh

test-unit: bootstrap
	@scripts/test-unit.sh

test-cluster: bootstrap
	@scripts/test-cluster.sh

bench: bootstrap
	@scripts/bench.sh

teardown: bootstrap
	@scripts/teardown.sh
