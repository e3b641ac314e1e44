"""Lambda protocol constants: API versions, paths, headers, error types and limits.
Every wire-level name the emulator speaks is defined here once, as AWS documents it."""

from __future__ import annotations

from typing import Final

# API versions and paths (all served on AWS_LAMBDA_RUNTIME_API).
RUNTIME_API_VERSION: Final = "2018-06-01"
EXTENSIONS_API_VERSION: Final = "2020-01-01"
TELEMETRY_API_VERSION: Final = "2022-07-01"
LOGS_API_VERSION: Final = "2020-08-15"

RUNTIME_NEXT: Final = f"/{RUNTIME_API_VERSION}/runtime/invocation/next"
RUNTIME_RESPONSE: Final = f"/{RUNTIME_API_VERSION}/runtime/invocation/{{request_id}}/response"
RUNTIME_ERROR: Final = f"/{RUNTIME_API_VERSION}/runtime/invocation/{{request_id}}/error"
RUNTIME_INIT_ERROR: Final = f"/{RUNTIME_API_VERSION}/runtime/init/error"
EXTENSION_REGISTER: Final = f"/{EXTENSIONS_API_VERSION}/extension/register"
EXTENSION_NEXT: Final = f"/{EXTENSIONS_API_VERSION}/extension/event/next"
EXTENSION_INIT_ERROR: Final = f"/{EXTENSIONS_API_VERSION}/extension/init/error"
EXTENSION_EXIT_ERROR: Final = f"/{EXTENSIONS_API_VERSION}/extension/exit/error"
TELEMETRY_SUBSCRIBE: Final = f"/{TELEMETRY_API_VERSION}/telemetry"
LOGS_SUBSCRIBE: Final = f"/{LOGS_API_VERSION}/logs"

# The invoke door, compatible with the Runtime Interface Emulator (RIE).
INVOKE_PATH: Final = "/2015-03-31/functions/{function}/invocations"

# Runtime API headers.
H_REQUEST_ID: Final = "Lambda-Runtime-Aws-Request-Id"
H_DEADLINE_MS: Final = "Lambda-Runtime-Deadline-Ms"
H_FUNCTION_ARN: Final = "Lambda-Runtime-Invoked-Function-Arn"
H_TRACE_ID: Final = "Lambda-Runtime-Trace-Id"
H_CLIENT_CONTEXT: Final = "Lambda-Runtime-Client-Context"
H_COGNITO_IDENTITY: Final = "Lambda-Runtime-Cognito-Identity"
H_FUNCTION_ERROR_TYPE: Final = "Lambda-Runtime-Function-Error-Type"

# Extensions API headers.
H_EXTENSION_NAME: Final = "Lambda-Extension-Name"
H_EXTENSION_ID: Final = "Lambda-Extension-Identifier"
H_EXTENSION_EVENT_ID: Final = "Lambda-Extension-Event-Identifier"
H_EXTENSION_ERROR_TYPE: Final = "Lambda-Extension-Function-Error-Type"
H_EXTENSION_FEATURES: Final = "Lambda-Extension-Accept-Feature"

# Invoke door headers (Lambda's Invoke API).
H_INVOCATION_TYPE: Final = "X-Amz-Invocation-Type"
H_AMZ_CLIENT_CONTEXT: Final = "X-Amz-Client-Context"
H_AMZ_FUNCTION_ERROR: Final = "X-Amz-Function-Error"
H_AMZ_EXECUTED_VERSION: Final = "X-Amz-Executed-Version"
H_AMZ_REQUEST_ID: Final = "X-Amzn-RequestId"
H_AMZN_TRACE_ID: Final = "X-Amzn-Trace-Id"

# Exactly this value: awslambdaric decodes the event as JSON only for it.
JSON_CONTENT_TYPE: Final = "application/json"

# Extension lifecycle events and shutdown reasons (lower case on the wire).
EVENT_INVOKE: Final = "INVOKE"
EVENT_SHUTDOWN: Final = "SHUTDOWN"
EXTENSION_EVENTS: Final = frozenset({EVENT_INVOKE, EVENT_SHUTDOWN})
REASON_SPINDOWN: Final = "spindown"
REASON_TIMEOUT: Final = "timeout"
REASON_FAILURE: Final = "failure"

# Extensions API error types (HTTP 403 unless noted).
ERR_EXT_INVALID_NAME: Final = "Extension.InvalidExtensionName"
ERR_EXT_REGISTRATION_CLOSED: Final = "Extension.RegistrationClosed"
ERR_EXT_UNKNOWN_ID: Final = "Extension.UnknownExtensionIdentifier"
ERR_EXT_MISSING_ID: Final = "Extension.MissingExtensionIdentifier"
ERR_EXT_INVALID_ID: Final = "Extension.InvalidExtensionIdentifier"
ERR_EXT_INVALID_STATE: Final = "Extension.InvalidExtensionState"
ERR_EXT_MISSING_HEADER: Final = "Extension.MissingHeader"
ERR_EXT_TOO_MANY: Final = "Extension.TooManyExtensions"
ERR_EXT_INVALID_EVENT: Final = "Extension.InvalidEventType"
ERR_INVALID_REQUEST_FORMAT: Final = "InvalidRequestFormat"
SHUTDOWN_NOT_FOR_INTERNAL: Final = "ShutdownEventNotSupportedForInternalExtension"

# Runtime API error types.
ERR_INVALID_REQUEST_ID: Final = "InvalidRequestID"
ERR_INVALID_STATE_TRANSITION: Final = "InvalidStateTransition"
ERR_REQUEST_TOO_LARGE: Final = "RequestEntityTooLarge"

# Telemetry and Logs API error types.
ERR_VALIDATION: Final = "ValidationError"
ERR_TELEMETRY_CLOSED: Final = "Telemetry.SubscriptionClosed"
ERR_LOGS_NOT_SUPPORTED: Final = "Logs.NotSupported"

# Error types that end an invocation or an init (what the caller and platform.report see).
ERR_EXTENSION_LAUNCH: Final = "Extension.LaunchError"
ERR_EXTENSION_CRASH: Final = "Extension.Crash"
ERR_EXTENSION_INIT: Final = "Extension.InitError"
ERR_EXTENSION_EXIT: Final = "Extension.ExitError"
ERR_RUNTIME_EXIT: Final = "Runtime.ExitError"
ERR_RUNTIME_UNKNOWN: Final = "Runtime.Unknown"
ERR_RUNTIME_OOM: Final = "Runtime.OutOfMemory"
ERR_RUNTIME_INVALID_ENTRYPOINT: Final = "Runtime.InvalidEntrypoint"
ERR_FUNCTION_RESPONSE_TOO_LARGE: Final = "Function.ResponseSizeTooLarge"
ERR_SANDBOX_TIMEDOUT: Final = "Sandbox.Timedout"
FUNCTION_ERROR_UNHANDLED: Final = "Unhandled"

# Telemetry API subscription rules (Telemetry API reference).
TELEMETRY_SCHEMA_VERSIONS: Final = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
TELEMETRY_TYPES: Final = frozenset({"platform", "function", "extension"})
BUFFER_MAX_ITEMS: Final = (1_000, 10_000, 10_000)  # (minimum, maximum, default)
BUFFER_MAX_BYTES: Final = (262_144, 1_048_576, 262_144)
BUFFER_TIMEOUT_MS: Final = (25, 30_000, 1_000)
SANDBOX_HOSTS: Final = frozenset({"sandbox", "sandbox.localdomain"})

# Telemetry event types.
T_INIT_START: Final = "platform.initStart"
T_INIT_RUNTIME_DONE: Final = "platform.initRuntimeDone"
T_INIT_REPORT: Final = "platform.initReport"
T_START: Final = "platform.start"
T_RUNTIME_DONE: Final = "platform.runtimeDone"
T_REPORT: Final = "platform.report"
T_EXTENSION: Final = "platform.extension"
T_SUBSCRIPTION: Final = "platform.telemetrySubscription"
T_LOGS_DROPPED: Final = "platform.logsDropped"
T_FUNCTION: Final = "function"
T_EXTENSION_LOG: Final = "extension"

# Limits of the execution environment.
MAX_EXTENSIONS: Final = 10
MAX_PAYLOAD_BYTES: Final = 6 * 1024 * 1024 + 100
INIT_TIMEOUT_S: Final = 10.0
SHUTDOWN_WITH_EXTENSIONS_MS: Final = 2_000
RUNTIME_SHUTDOWN_MS: Final = 300
RUNTIME_SHUTDOWN_INTERNAL_MS: Final = 500
SHUTDOWN_WITHOUT_EXTENSIONS_MS: Final = 300
MB_PER_VCPU: Final = 1_769
MAX_VCPUS: Final = 6
# On-demand Init runs with burst CPU, not the memory size's share ("up to 10 seconds for
# function initialization with burst CPU"; measured by others at two unthrottled vCPUs).
INIT_BURST_VCPUS: Final = 2
MEMORY_MB_RANGE: Final = (128, 10_240)
TIMEOUT_S_RANGE: Final = (1, 900)

# Variables only the runtime process sees; extensions get the function's environment without them.
RUNTIME_ONLY_VARIABLES: Final = frozenset(
    {
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "_AWS_XRAY_DAEMON_ADDRESS",
        "_AWS_XRAY_DAEMON_PORT",
        "_HANDLER",
    }
)
EXEC_WRAPPER_VARIABLE: Final = "AWS_LAMBDA_EXEC_WRAPPER"
# Where the layer directory is, for code that must find it without --isolate.
OPT_DIR_VARIABLE: Final = "AFTERFLUSH_OPT_DIR"
