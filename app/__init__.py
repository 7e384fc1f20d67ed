"""contimg server: Panel template, routes, scheduler, /metrics and the JSON API."""
