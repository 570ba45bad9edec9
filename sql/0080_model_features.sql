-- A model's catalog entry may say what it cannot take: "supports": {"tools": false, "images":
-- false, "json_output": false}. The router leaves such a model out of a plan for a request that
-- asks for one (tools or functions, an image part, a JSON response_format), as it leaves an
-- Anthropic model out of one asking what the Messages API has no equivalent of, instead of
-- spending a call on its refusal; a request no model of the catalog can take fails at once,
-- unsupported_request. An operator's walkthrough found no way to say so: requests with tools or
-- images were planned onto a text-only model first, and only its refusal at the call moved them on.
--
-- Stored as the names of what the model cannot take; the empty default is a model that takes
-- anything, as every model was before. Workers of the release before this one do not read it.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.models
    ADD COLUMN unsupported_features text[] NOT NULL DEFAULT '{}'
        CONSTRAINT models_unsupported_features_known
            CHECK (unsupported_features <@ ARRAY['tools', 'images', 'json_output']::text[]);
