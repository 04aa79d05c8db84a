package policy

import "github.com/open-policy-agent/opa/v1/ast"

// value builds the input document directly as a Rego value: handing OPA the
// Go struct would make it round-trip through JSON on every request.
func (in Input) value() ast.Value {
	items := [][2]*ast.Term{
		ast.Item(ast.StringTerm("repository"), ast.StringTerm(in.Repository)),
		ast.Item(ast.StringTerm("trusted_auth_mount_accessors"), stringsTerm(in.TrustedAuthMountAccessors)),
		ast.Item(ast.StringTerm("commit"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("message"), ast.StringTerm(in.Commit.Message)),
			ast.Item(ast.StringTerm("author"), ast.ObjectTerm(
				ast.Item(ast.StringTerm("name"), ast.StringTerm(in.Commit.Author.Name)),
				ast.Item(ast.StringTerm("email"), ast.StringTerm(in.Commit.Author.Email)),
			)),
		)),
		ast.Item(ast.StringTerm("commands"), commandsTerm(in.Commands)),
	}
	// Absent rather than null, so `not input.identity` holds for a caller
	// without an entity.
	if in.Identity != nil {
		items = append(items, ast.Item(ast.StringTerm("identity"), in.Identity.term()))
	}
	return ast.NewObject(items...)
}

func commandsTerm(commands []CommandInput) *ast.Term {
	terms := make([]*ast.Term, 0, len(commands))
	for _, c := range commands {
		terms = append(terms, ast.ObjectTerm(
			ast.Item(ast.StringTerm("path"), ast.StringTerm(c.Path)),
			ast.Item(ast.StringTerm("op"), ast.StringTerm(c.Op)),
			ast.Item(ast.StringTerm("field"), ast.StringTerm(c.Field)),
		))
	}
	return ast.ArrayTerm(terms...)
}

func (id *Identity) term() *ast.Term {
	aliases := make([]*ast.Term, 0, len(id.Aliases))
	for _, a := range id.Aliases {
		metadata := make([][2]*ast.Term, 0, len(a.Metadata))
		for k, v := range a.Metadata {
			metadata = append(metadata, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
		}
		aliases = append(aliases, ast.ObjectTerm(
			ast.Item(ast.StringTerm("mount_type"), ast.StringTerm(a.MountType)),
			ast.Item(ast.StringTerm("mount_accessor"), ast.StringTerm(a.MountAccessor)),
			ast.Item(ast.StringTerm("name"), ast.StringTerm(a.Name)),
			ast.Item(ast.StringTerm("metadata"), ast.ObjectTerm(metadata...)),
		))
	}
	return ast.ObjectTerm(
		ast.Item(ast.StringTerm("entity_id"), ast.StringTerm(id.EntityID)),
		ast.Item(ast.StringTerm("entity_name"), ast.StringTerm(id.EntityName)),
		ast.Item(ast.StringTerm("aliases"), ast.ArrayTerm(aliases...)),
		ast.Item(ast.StringTerm("groups"), stringsTerm(id.Groups)),
	)
}

func stringsTerm(ss []string) *ast.Term {
	terms := make([]*ast.Term, 0, len(ss))
	for _, s := range ss {
		terms = append(terms, ast.StringTerm(s))
	}
	return ast.ArrayTerm(terms...)
}
