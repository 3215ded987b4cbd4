"""Setups D and E: a bare grpc.aio ext_proc server that answers CONTINUE to every request's headers.

`python -m bench.bare_extproc --mode naive --port P` is the floor as most people would write it: the
generated servicer, one `ProcessingResponse` built and serialised per message, the default asyncio loop,
the stream kept until Envoy closes it.
`--mode tuned` is the same floor with zerohop's tricks: uvloop, a generic handler whose responses are
written pre-serialised, `context.read()` / `context.write()`, the stream ended right after the answer,
and (the bench starts it with that environment) gRPC core's settings of `extproc.app.grpcenv`.
Neither looks at the request; everything zerohop does beyond this is its own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

# Same gRPC server options as `zerohop serve`, so that in the tuned floor only the handler differs.
from extproc.app.server import grpc_server
from extproc.app.settings import Settings

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
CONTINUE = ep.ProcessingResponse(request_headers=ep.HeadersResponse()).SerializeToString()


class NaiveProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for _ in request_iterator:
            yield ep.ProcessingResponse(request_headers=ep.HeadersResponse())


async def tuned_process(_requests: object, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
    request = await context.read()
    if request is grpc.aio.EOF:
        return
    await context.write(CONTINUE)


def tuned_handler() -> grpc.GenericRpcHandler:
    handler: grpc.RpcMethodHandler[Any, bytes] = grpc.stream_stream_rpc_method_handler(
        tuned_process, request_deserializer=ep.ProcessingRequest.FromString, response_serializer=None
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Process": handler})


async def serve(mode: str, port: int) -> None:
    if mode == "naive":
        server = grpc.aio.server()
        ep_grpc.add_ExternalProcessorServicer_to_server(NaiveProcessor(), server)
    else:
        settings = Settings()
        server = grpc_server(settings, settings.ext_proc_max_streams)
        server.add_generic_rpc_handlers((tuned_handler(),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_extproc", description=__doc__)
    parser.add_argument("--mode", choices=["naive", "tuned"], required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.mode == "naive":
        asyncio.run(serve(args.mode, args.port))
    else:
        import uvloop

        uvloop.run(serve(args.mode, args.port))


if __name__ == "__main__":
    main()
