package fakeserver

import (
	"fmt"
	"sort"
	"strings"
)

// APIError is an error answered inside the envelope: HTTP status == Code.
type APIError struct {
	Code    int
	Subcode int
	Msg     string

	noStack bool // a 500/0 whose error_stack is null anyway
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d/%d: %s", e.Code, e.Subcode, e.Msg)
}

// kv is one "k=v" pair of an error message, kept in call order.
type kv struct {
	k string
	v any
}

// newErr builds a message the way the server's BaseError does (§7):
// default text, then " (extra)", then ": k=v, k2=v2"; lists print as (a, b).
func newErr(code, sub int, base, extra string, kvs ...kv) *APIError {
	msg := base
	if extra != "" {
		msg += " (" + extra + ")"
	}
	if len(kvs) > 0 {
		parts := make([]string, len(kvs))
		for i, p := range kvs {
			parts[i] = p.k + "=" + fmtKwarg(p.v)
		}
		msg += ": " + strings.Join(parts, ", ")
	}
	return &APIError{Code: code, Subcode: sub, Msg: msg}
}

func fmtKwarg(v any) string {
	switch x := v.(type) {
	case []string:
		return "(" + strings.Join(x, ", ") + ")"
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = fmt.Sprint(e)
		}
		return "(" + strings.Join(s, ", ") + ")"
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	default:
		return fmt.Sprint(x)
	}
}

// Default texts from errors.conf, already "capitalized" (first letter upper, rest lower).
const (
	msgBadRequest          = "Bad request"
	msgInvalidHeaders      = "Invalid headers"
	msgImpersonation       = "Impersonation error"
	msgMissingRequired     = "Missing required fields"
	msgValidation          = "Validation error"
	msgFieldsValue         = "Invalid value for fields"
	msgBatchNoItems        = "Batch request contains no items"
	msgInvalidTaskID       = "Invalid task id"
	msgInvalidTaskStatus   = "Invalid task status"
	msgFailedChangeStatus  = "Failed changing task status. probably someone changed it before you"
	msgMissingTaskFields   = "Task is missing expected fields"
	msgTaskCannotDelete    = "Task cannot be deleted"
	msgEventsNotAdded      = "Events not added"
	msgInvalidQueueID      = "Invalid queue id"
	msgQueueNotEmpty       = "Queue is not empty"
	msgQueueTaskNotQueued  = "Invalid queue id or task not in queue"
	msgTaskAlreadyQueued   = "Failed adding task to queue since task is already queued"
	msgNoDefaultQueue      = "No queue is tagged as the default queue for this company"
	msgMultipleDefaultQ    = "More than one queue is tagged as the default queue for this company"
	msgDataValidation      = "Data validation error"
	msgExpectedUnique      = "Value combination already exists (unique field already contains this value)"
	msgWorkerRegFailed     = "Worker registration failed"
	msgInvalidProjectID    = "Invalid project id"
	msgBadAuthType         = "Unauthorized (bad authentication header type)"
	msgNoCredentials       = "Unauthorized (missing credentials)"
	msgBadCredentials      = "Unauthorized (malformed credentials)"
	msgInvalidCredentials  = "Unauthorized (invalid credentials)"
	msgInvalidToken        = "Invalid token"
	msgRoleNotAllowed      = "Forbidden (not allowed for role)"
	msgNoWritePermission   = "Forbidden (modification not allowed)"
	msgGeneralError        = "General server error"
	msgInternalError       = "Internal server error"
	msgInvalidRegex        = "Malformed regular expression"
	msgInvalidCredentialID = "Invalid user id"
)

func errValidation(extra string, kvs ...kv) *APIError {
	return newErr(400, 12, msgValidation, extra, kvs...)
}

// errRequired mimics jsonmodels' message for a missing required field (§1.7).
func errRequired(field string) *APIError {
	return errValidation(fmt.Sprintf("error for field '%s'. field is required!", field))
}

// errWrongType mimics jsonmodels' type error, lower-cased by the server.
func errWrongType(field, typ string, v any) *APIError {
	return errValidation(strings.ToLower(fmt.Sprintf("value is wrong, expected type \"%s\" %s", typ, pyRepr(v))))
}

func errInvalidTaskIDs(ids ...string) *APIError {
	return newErr(400, 101, msgInvalidTaskID, "", kv{"ids", ids})
}

func errInvalidTaskID(id, company string) *APIError {
	return newErr(400, 101, msgInvalidTaskID, "", kv{"id", id}, kv{"company", company})
}

func errStatusChange(cur, next string) *APIError {
	return newErr(400, 110, msgInvalidTaskStatus, "Invalid status change", kv{"current_status", cur}, kv{"new_status", next})
}

func errExpectedCreated(status string) *APIError {
	return newErr(400, 110, msgInvalidTaskStatus, "", kv{"expected", "created"}, kv{"status", status})
}

func errInvalidQueueID(id, company string) *APIError {
	return newErr(400, 701, msgInvalidQueueID, "", kv{"id", id}, kv{"company", company})
}

func errInvalidQueueIDs(ids []string) *APIError {
	s := append([]string(nil), ids...)
	sort.Strings(s)
	return newErr(400, 701, msgInvalidQueueID, "", kv{"ids", s})
}

func errTaskAlreadyQueued(task string) *APIError {
	return newErr(400, 706, msgTaskAlreadyQueued, "", kv{"task", task})
}

func errNotInQueue(task, queue, company string) *APIError {
	return newErr(400, 703, msgQueueTaskNotQueued, "", kv{"task", task}, kv{"id", queue}, kv{"company", company})
}

func errNoDefaultQueue() *APIError { return newErr(400, 707, msgNoDefaultQueue, "") }

func errNotFoundEndpoint(name, version string) *APIError {
	return &APIError{Code: 404, Subcode: 0, Msg: fmt.Sprintf("Unable to find endpoint for name %s and version %s", name, version)}
}

func errInvalidToken(extra string, kvs ...kv) *APIError {
	return newErr(401, 30, msgInvalidToken, extra, kvs...)
}

// pyRepr renders a decoded JSON value roughly like Python's str().
func pyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case string:
		return "'" + x + "'"
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = pyRepr(e)
		}
		return "[" + strings.Join(s, ", ") + "]"
	case map[string]any:
		keys := sortedKeys(x)
		s := make([]string, len(keys))
		for i, k := range keys {
			s[i] = "'" + k + "': " + pyRepr(x[k])
		}
		return "{" + strings.Join(s, ", ") + "}"
	default:
		return fmt.Sprint(x)
	}
}

// pyStr is Python's str() of a decoded JSON value (strings unquoted).
func pyStr(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return pyRepr(v)
}
