"""What zerohop shows about itself: `metrics` (/metrics), `telemetry` (OpenTelemetry), `logs`,
`admin` (the admin HTTP server: health, /status), `statuspage` (its HTML page), `history` (every target's
last hour, sampled each second, for the page's charts) and `pacing` (long admin work in slices, so a scrape
never holds the event loop that answers Envoy)."""
