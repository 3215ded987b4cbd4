"""What zerohop shows about itself: `metrics` (/metrics), `telemetry` (OpenTelemetry), `logs`,
`admin` (the admin HTTP server: health, /status) and `statuspage` (its HTML page)."""
