"""The handler Lambda runs when AWS_LAMBDA_EXEC_WRAPPER=/opt/otel-instrument (which moves the
function's own handler to ORIG_HANDLER): OpenTelemetry is set up on import, then the function's
handler runs wrapped. The same module name as in the ADOT Python layer.
"""

from afterflush_instrument import setup

lambda_handler = setup()
