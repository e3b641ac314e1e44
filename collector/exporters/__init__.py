"""Exporters: otlp (gRPC), otlphttp, debug/logging; each module exports one FACTORY.

Nothing heavy is imported here: grpc and aiohttp load when an exporter starts.
"""
