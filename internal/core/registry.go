package core

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"
)

// Fn is a registered task function, called with decoded arguments.
type Fn struct {
	Name     string
	ArgTypes []reflect.Type
	Call     func(ctx context.Context, args []any) (any, error)
}

// Method is a registered actor method.
type Method struct {
	Name     string
	ArgTypes []reflect.Type
	Call     func(ctx context.Context, recv any, args []any) (any, error)
}

// ActorType is a registered actor type.
type ActorType struct {
	Name    string
	New     func() any
	mu      sync.RWMutex
	methods map[string]*Method
}

// Method looks a method up by its registered name.
func (t *ActorType) Method(name string) (*Method, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m, ok := t.methods[name]
	return m, ok
}

// MethodNames lists the registered methods, sorted.
func (t *ActorType) MethodNames() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	names := make([]string, 0, len(t.methods))
	for n := range t.methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var registry = struct {
	mu     sync.RWMutex
	fns    map[string]*Fn
	actors map[string]*ActorType
}{fns: map[string]*Fn{}, actors: map[string]*ActorType{}}

// RegisterFn adds a task function. Registering one name twice panics: it is a
// programming error found at start-up, like http.Handle's.
func RegisterFn(f *Fn) {
	if f.Name == "" {
		panic("goray: task.Register with an empty name")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, dup := registry.fns[f.Name]; dup {
		panic(fmt.Sprintf("goray: task function %q registered twice", f.Name))
	}
	registry.fns[f.Name] = f
}

// RegisterActorType adds an actor type.
func RegisterActorType(name string, newFn func() any) *ActorType {
	if name == "" {
		panic("goray: actor.Register with an empty name")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, dup := registry.actors[name]; dup {
		panic(fmt.Sprintf("goray: actor type %q registered twice", name))
	}
	t := &ActorType{Name: name, New: newFn, methods: map[string]*Method{}}
	registry.actors[name] = t
	return t
}

// RegisterMethod adds a method to an actor type.
func (t *ActorType) RegisterMethod(m *Method) {
	if m.Name == "" {
		panic(fmt.Sprintf("goray: actor type %q: method registered with an empty name", t.Name))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.methods[m.Name]; dup {
		panic(fmt.Sprintf("goray: actor type %q: method %q registered twice", t.Name, m.Name))
	}
	t.methods[m.Name] = m
}

// LookupFn finds a task function by name.
func LookupFn(name string) (*Fn, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	f, ok := registry.fns[name]
	return f, ok
}

// LookupActorType finds an actor type by name.
func LookupActorType(name string) (*ActorType, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	t, ok := registry.actors[name]
	return t, ok
}
