package model

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// Status is a snapshot of leadership and recent runs.
type Status struct {
	Terms []LeaderTerm
	Runs  []JobRun
}

// ReadStatus reads every scope's current term and the limit most recent runs.
func ReadStatus(ctx context.Context, db *gorm.DB, limit int) (Status, error) {
	var st Status
	db = db.WithContext(ctx)
	if err := db.Order("scope").Find(&st.Terms).Error; err != nil {
		return st, fmt.Errorf("read leader_terms: %w", err)
	}
	if err := db.Order("slot DESC").Order("job").Limit(limit).Find(&st.Runs).Error; err != nil {
		return st, fmt.Errorf("read job_runs: %w", err)
	}
	return st, nil
}
