package console

import (
	"testing"
	"time"
)

// TestSessions: a session expires at its end, ends when told, and the
// store never holds more than its bound (the one closest to its end goes).
func TestSessions(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := newSessions(time.Hour, 2)
	st.now = func() time.Time { return now }
	a, err := st.create("alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.get(a.id); got == nil || got.user != "alice" || got.csrf == "" || got.csrf == a.id {
		t.Fatalf("get = %+v", got)
	}
	now = now.Add(30 * time.Minute)
	b, _ := st.create("bob")
	c, _ := st.create("carol") // over the bound: alice's, the oldest, goes
	if st.get(a.id) != nil || st.get(b.id) == nil || st.get(c.id) == nil {
		t.Fatal("the bound did not drop the session closest to its end")
	}
	now = now.Add(time.Hour)
	if st.get(b.id) != nil {
		t.Fatal("an expired session is still live")
	}
	st.end(c.id)
	if st.get(c.id) != nil {
		t.Fatal("an ended session is still live")
	}
	if st.get("") != nil || st.get("guess") != nil {
		t.Fatal("an unknown id is live")
	}
	if sameToken("", "") || sameToken("x", "") || !sameToken("x", "x") {
		t.Fatal("sameToken")
	}
}
