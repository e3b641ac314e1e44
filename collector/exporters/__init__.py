"""Exporters: otlp (gRPC), otlphttp, debug/logging; each module exports one FACTORY.

Nothing heavy is imported here: grpc loads when the otlp exporter starts, aiohttp at the
otlphttp exporter's first export (after the response, not during Init).
"""
