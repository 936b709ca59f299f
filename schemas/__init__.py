"""The contracts: topic messages, REST resources and the table layout (db/*.sql). Imports only pydantic."""
