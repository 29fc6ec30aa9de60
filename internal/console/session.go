package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// session is one signed-in browser: a random id (the cookie), the user,
// the token every form of the session carries, and when it ends.
type session struct {
	id, user, csrf string
	expires        time.Time
}

// sessions is the server-side store. It holds at most max sessions; a new
// one beyond that drops the one closest to its end.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	max int
	now func() time.Time
}

func newSessions(ttl time.Duration, maxSessions int) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, max: maxSessions, now: time.Now}
}

// randomToken is 32 random bytes, base64url.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// create starts a session for user.
func (st *sessions) create(user string) (*session, error) {
	id, err := randomToken()
	if err != nil {
		return nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return nil, err
	}
	s := &session{id: id, user: user, csrf: csrf, expires: st.now().Add(st.ttl)}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sweepLocked()
	if len(st.m) >= st.max {
		var first *session
		for _, o := range st.m {
			if first == nil || o.expires.Before(first.expires) {
				first = o
			}
		}
		delete(st.m, first.id)
	}
	st.m[id] = s
	return s, nil
}

// get is the live session of id, or nil (unknown, ended or expired).
func (st *sessions) get(id string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[id]
	if !ok {
		return nil
	}
	if !st.now().Before(s.expires) {
		delete(st.m, id)
		return nil
	}
	c := *s
	return &c
}

// end forgets the session id.
func (st *sessions) end(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, id)
}

func (st *sessions) sweepLocked() {
	now := st.now()
	for id, s := range st.m {
		if !now.Before(s.expires) {
			delete(st.m, id)
		}
	}
}

// sameToken compares a form's token with the expected one in constant time.
func sameToken(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
