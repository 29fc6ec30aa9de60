package registry

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// distribution logs through logrus' standard logger, a process global. It is
// configured here, once: only warnings and errors, forwarded to the slog
// logger of the most recently created Registry.
var (
	bridgeOnce sync.Once
	bridgeLog  atomic.Pointer[slog.Logger]
)

func bridgeLogrus(l *slog.Logger) {
	bridgeLog.Store(l)
	bridgeOnce.Do(func() {
		std := logrus.StandardLogger()
		std.SetOutput(io.Discard)
		std.SetLevel(logrus.WarnLevel)
		std.AddHook(slogHook{})
	})
}

type slogHook struct{}

func (slogHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (slogHook) Fire(e *logrus.Entry) error {
	l := bridgeLog.Load()
	if l == nil {
		return nil
	}
	level := slog.LevelWarn
	switch {
	case strings.Contains(e.Message, "authentication required"):
		// Every anonymous GET /v2/ is answered with a challenge, as it
		// must be: that is not news.
		level = slog.LevelDebug
	case e.Level <= logrus.ErrorLevel:
		level = slog.LevelError
	}
	attrs := make([]slog.Attr, 0, len(e.Data)+1)
	attrs = append(attrs, slog.String("component", "distribution"))
	for k, v := range e.Data {
		attrs = append(attrs, slog.Any(k, v))
	}
	l.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}
