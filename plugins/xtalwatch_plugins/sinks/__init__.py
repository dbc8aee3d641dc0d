"""Built-in alert sinks: each takes its config section and delivers one alert per ``send`` (or raises)."""
