"""What zerohop shows about itself: `metrics` (/metrics), `telemetry` (OpenTelemetry), `logs`,
`admin` (the admin HTTP server: health, /status), `statuspage` (its HTML page) and `pacing` (long admin
work in slices, so a scrape never holds the event loop that answers Envoy)."""
