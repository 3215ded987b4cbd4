"""Generated from protos/externalscaler.proto by `make protos`; do not edit."""
