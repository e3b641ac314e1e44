package flushcontrol

import (
	"fmt"
	"regexp"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"google.golang.org/grpc/status"
)

// isPermanent says whether an export failed for good: sending it again would fail again.
func isPermanent(err error) bool { return consumererror.IsPermanent(err) }

var httpStatus = regexp.MustCompile(`HTTP Status Code (\d{3})`)

// dropReason is the short reason items that failed for good are counted under: "http 400",
// "grpc InvalidArgument", or "permanent".
func dropReason(err error) string {
	if m := httpStatus.FindStringSubmatch(err.Error()); m != nil {
		return "http " + m[1]
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("grpc %s", st.Code())
	}
	return "permanent"
}
