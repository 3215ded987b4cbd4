"""The application: `settings` (flags and ZEROHOP_* variables), `server` (wiring and lifecycle),
`cli` (the `zerohop` command), `statuscli` (`zerohop status`), `grpcenv` (gRPC process settings)."""
