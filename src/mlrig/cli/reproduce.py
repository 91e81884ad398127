"""`mlrig reproduce`: a registered model trained again from its lineage, and compared."""
