-- The W3C trace context of the code that enqueued a task (its traceparent
-- and tracestate, as {"traceparent": ..., "tracestate": ...}), so that every
-- attempt, the provider call and the settlement continue the trace of the
-- request that asked for the work. NULL: enqueued outside any trace. Not
-- part of the request a key names: a replay from another trace is the same
-- request.
ALTER TABLE @schema@.task ADD COLUMN trace_context jsonb;
-- NOT VALID: every existing row is NULL, so the scan a validation would
-- take (under the table's exclusive lock) proves nothing; new rows are
-- checked all the same.
ALTER TABLE @schema@.task ADD CONSTRAINT task_trace_context_shape CHECK (
  trace_context IS NULL
  OR (jsonb_typeof(trace_context) = 'object'
      AND jsonb_typeof(trace_context -> 'traceparent') = 'string'
      AND octet_length(trace_context::text) <= 1024)
) NOT VALID;
