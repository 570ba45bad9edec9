-- A message may carry cache_control.
--
-- The Anthropic translation keeps a message's cache_control mark on its last block (as LiteLLM
-- passes it), and docs/routing.md says so; but the default message_fields left it out, so a
-- submission with one was refused ("request.messages[0] has an unknown field 'cache_control'")
-- unless an operator changed the setting. It is added to the list, whatever else it holds; '*'
-- allows it already.
SET LOCAL ROLE switchyard_admin;

UPDATE switchyard.settings
SET value = value || ',cache_control'
WHERE name = 'message_fields' AND btrim(value) <> '*'
  AND NOT ('cache_control' = ANY (string_to_array(replace(value, ' ', ''), ',')));
