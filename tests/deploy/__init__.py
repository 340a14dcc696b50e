"""Tests of deploy/: manifests and Dockerfile agree with each other, genie and Kubernetes."""
