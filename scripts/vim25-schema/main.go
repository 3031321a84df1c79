// Command vim25-schema writes the vim25 type table that vpoller's SOAP decoder
// and encoder use, read from govmomi's generated vim25/types sources.
//
// vim25 XML does not say the type of a field nested in a data object, and a
// one-element array looks like a scalar, so the kinds must come from the
// schema. govmomi's types.go is a faithful, machine-generated copy of it.
//
// Output, one line per type, fields in schema (wire) order:
//
//	TypeName BaseName field:kind field:kind[] ...
//
// where kind is an xsd name (string, int, long, short, byte, float, double,
// boolean, dateTime, base64Binary, anyType) or a vim25 type name, "[]" marks
// an array, and BaseName is "-" for a root type. Enums appear as "string".
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

type field struct {
	name  string
	kind  string
	array bool
}

type structType struct {
	base   string
	fields []field
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vim25-schema GOVMOMI_VIM25_TYPES_DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	fset := token.NewFileSet()
	structs := map[string]*ast.StructType{}
	aliases := map[string]string{} // type X Y, with Y a named type
	enums := map[string]bool{}     // type X string
	for _, name := range []string{"types.go", "enum.go", "base.go", "fault.go", "helpers.go"} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, decl := range file.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.TYPE {
				continue
			}
			for _, spec := range gen.Specs {
				ts := spec.(*ast.TypeSpec)
				switch t := ts.Type.(type) {
				case *ast.StructType:
					structs[ts.Name.Name] = t
				case *ast.Ident:
					if t.Name == "string" {
						enums[ts.Name.Name] = true
					} else {
						aliases[ts.Name.Name] = t.Name
					}
				}
			}
		}
	}

	kindOf := func(expr ast.Expr) (string, bool) {
		array := false
		for {
			switch t := expr.(type) {
			case *ast.StarExpr:
				expr = t.X
				continue
			case *ast.ArrayType:
				if id, ok := t.Elt.(*ast.Ident); ok && id.Name == "byte" {
					return "base64Binary", array
				}
				array = true
				expr = t.Elt
				continue
			case *ast.SelectorExpr:
				if t.Sel.Name == "Time" {
					return "dateTime", array
				}
				return t.Sel.Name, array
			case *ast.InterfaceType:
				return "anyType", array
			case *ast.Ident:
				return goKind(t.Name, enums, aliases), array
			}
			return "anyType", array
		}
	}

	out := map[string]structType{}
	for name, st := range structs {
		var s structType
		s.base = "-"
		for _, f := range st.Fields.List {
			if len(f.Names) == 0 { // embedded: the base type
				if id, ok := f.Type.(*ast.Ident); ok {
					s.base = id.Name
				}
				continue
			}
			tag := ""
			if f.Tag != nil {
				raw, _ := strconv.Unquote(f.Tag.Value)
				tag = reflect.StructTag(raw).Get("xml")
			}
			xmlName := strings.Split(tag, ",")[0]
			if xmlName == "-" || xmlName == "" || strings.Contains(tag, "chardata") || strings.Contains(tag, "attr") && !strings.Contains(tag, "typeattr") {
				continue
			}
			kind, array := kindOf(f.Type)
			s.fields = append(s.fields, field{xmlName, kind, array})
		}
		out[name] = s
	}
	// type X Y where Y is a struct: X has Y's fields (RetrievePropertiesEx = RetrievePropertiesExRequestType).
	for name, target := range aliases {
		if s, ok := out[target]; ok {
			out[name] = s
		}
	}

	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := out[n]
		var b strings.Builder
		b.WriteString(n)
		b.WriteString(" ")
		b.WriteString(s.base)
		for _, f := range s.fields {
			b.WriteString(" ")
			b.WriteString(f.name)
			b.WriteString(":")
			b.WriteString(f.kind)
			if f.array {
				b.WriteString("[]")
			}
		}
		fmt.Println(b.String())
	}
}

func goKind(name string, enums map[string]bool, aliases map[string]string) string {
	switch name {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int32", "int":
		return "int"
	case "int64":
		return "long"
	case "int16":
		return "short"
	case "int8", "byte", "uint8":
		return "byte"
	case "float32":
		return "float"
	case "float64":
		return "double"
	case "AnyType":
		return "anyType"
	}
	if enums[name] {
		return "string"
	}
	if strings.HasPrefix(name, "Base") && len(name) > 4 {
		return name[4:]
	}
	if target, ok := aliases[name]; ok {
		return goKind(target, enums, aliases)
	}
	return name
}
