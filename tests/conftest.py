"""Shared pytest setup: the gRPC core settings `zerohop serve` runs with (fork handling off, as tests spawn
replica processes while gRPC runs; the polling engine), set before any test module imports grpc."""

from extproc.app import grpcenv

grpcenv.apply()
