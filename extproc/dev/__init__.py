"""Developer tools: `demo` (`zerohop demo`), `demoapp` (its sample app), `envoyproc` (run a real Envoy)."""
