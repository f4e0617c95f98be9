"""The Workspace API (kaito.sh/v1beta1).

    types       the pydantic Workspace types and constants (annotations, conditions, states)
    loading     YAML in and out: load_path, load_text, parse_workspace, dump_workspace
    defaults    apply_defaults: what admission fills in
    validation  validate(new, old, context): the admission rules as one pure function
    placement   the rules on ``resource`` (instance types, GPU memory, own nodes)
    crd         generate_crd, crd_yaml: the CustomResourceDefinition from the types

The package itself imports nothing, so ``pykaito.api.types`` stays cheap for the client.
"""
