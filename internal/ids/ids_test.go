package ids

import "testing"

func TestNesting(t *testing.T) {
	j := JobIDFromUint32(42)
	if j.Uint32() != 42 {
		t.Fatalf("job number: got %d, want 42", j.Uint32())
	}
	a := NewActorID(j)
	if a.Job() != j {
		t.Fatalf("actor's job: got %s, want %s", a.Job(), j)
	}
	tk := NewTaskID(j)
	o := tk.ObjectID(3)
	if o.Task() != tk || o.Job() != j {
		t.Fatalf("object %s: task %s job %s, want task %s job %s", o, o.Task(), o.Job(), tk, j)
	}
	if NewTaskID(j) == tk {
		t.Fatal("two fresh task IDs are equal")
	}
	back, err := ParseObjectIDHex(o.String())
	if err != nil || back != o {
		t.Fatalf("ParseObjectIDHex: got %s, %v; want %s", back, err, o)
	}
}

func TestParseRejectsWrongSizes(t *testing.T) {
	for _, n := range []int{0, 3, 21} {
		if _, err := ParseObjectID(make([]byte, n)); err == nil {
			t.Errorf("ParseObjectID(%d bytes): got nil error, want one", n)
		}
	}
	if _, err := ParseObjectIDHex("zz"); err == nil {
		t.Error("ParseObjectIDHex(zz): got nil error, want one")
	}
}
