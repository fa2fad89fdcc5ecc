package core

import (
	"fmt"
	"os"
	"sort"

	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// EnvDescribe, set to 1, makes runtime.Init print the program's registry
// (Describe, as protojson of goray.v1.Registry) to stdout and exit 0 before
// it connects anywhere. `goray deploy` runs the binary so to learn what a
// namespace offers.
const EnvDescribe = "GORAY_DESCRIBE"

// Describe lists what this program registered: task functions, actor types
// and their methods, with the Go types of their arguments, sorted by name.
func Describe() *pb.Registry {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	out := &pb.Registry{}
	for _, f := range registry.fns {
		fi := &pb.FunctionInfo{Name: f.Name}
		for _, t := range f.ArgTypes {
			fi.ArgTypes = append(fi.ArgTypes, t.String())
		}
		out.Functions = append(out.Functions, fi)
	}
	for _, t := range registry.actors {
		ai := &pb.ActorTypeInfo{Name: t.Name}
		for _, name := range t.MethodNames() {
			m, _ := t.Method(name)
			mi := &pb.MethodInfo{Name: name}
			for _, at := range m.ArgTypes {
				mi.ArgTypes = append(mi.ArgTypes, at.String())
			}
			ai.Methods = append(ai.Methods, mi)
		}
		out.ActorTypes = append(out.ActorTypes, ai)
	}
	sort.Slice(out.Functions, func(i, j int) bool { return out.Functions[i].GetName() < out.Functions[j].GetName() })
	sort.Slice(out.ActorTypes, func(i, j int) bool { return out.ActorTypes[i].GetName() < out.ActorTypes[j].GetName() })
	return out
}

// DescribeIfAsked prints Describe and exits when EnvDescribe is 1; otherwise
// it returns at once. runtime.Init calls it first.
func DescribeIfAsked() {
	if os.Getenv(EnvDescribe) != "1" {
		return
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(Describe())
	if err != nil {
		fmt.Fprintln(os.Stderr, "goray: describe registry:", err)
		os.Exit(2)
	}
	fmt.Println(string(b))
	os.Exit(0)
}
